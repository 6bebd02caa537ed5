/*
 * numparse.c -- decimal text to float32, correctly rounded, without locale.
 *
 * The CSV and svmlight loaders call this once per field, so it has to be fast
 * and it has to agree with strtof() bit for bit (the C library's result is
 * correctly rounded, and users compare our matrices with numpy/pandas ones).
 *
 * How. One scan collects the sign, up to 19 significant digits in a uint64
 * (more digits only set a "dropped" flag), and a decimal exponent. Then:
 *
 *   1. Integer path: exponent >= 0 and mantissa * 10^exp fits in a uint64.
 *      The value is an exact integer; the uint64 -> float conversion rounds it
 *      once, correctly.
 *   2. Small-fraction path: exponent in [-12, 0), mantissa < 2^53. Mantissa and
 *      10^k are exact doubles, so m / 10^k is correctly rounded to double.
 *      Rounding that double to float a second time is still correct: a double
 *      rounding error needs the exact quotient to sit within half a double ulp
 *      of a float midpoint without being on it, and for m < 2^53 the quotient
 *      is at least 2^q / 5^k away from any midpoint M * 2^q (a lattice
 *      argument), which exceeds half a double ulp (2^(q-29)) while 5^k < 2^29,
 *      i.e. k <= 12.
 *   3. Everything else (more than 19 digits, large exponents, subnormals)
 *      goes to strtof() on a canonical copy on the stack: the digits as an
 *      integer plus an "e" exponent. That copy has no decimal point, so the
 *      host's locale (which may use ',') cannot change the result. Digits
 *      beyond 120 are folded into one sticky non-zero digit: a float never
 *      needs more than ~112 significant digits to be rounded correctly.
 *
 * Accepted: [+-]digits[.digits][(e|E)[+-]digits] (at least one mantissa digit,
 * either side of the point) and [+-]nan / inf / infinity in any case. Nothing
 * else: no spaces, no hex, no trailing bytes. Out-of-range values give +-inf
 * or +-0, exactly as strtof() does.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aimsi_data.h"

enum {
    MAX_FAST_DIGITS = 19,   /* 10^19 - 1 < 2^64 */
    MAX_SLOW_DIGITS = 120,  /* enough for any float decision, see above */
    OUT_EXP_CLAMP = 100000  /* far beyond any float's range */
};
/* Exponent accumulation stops growing here: larger than any input length, so
 * "0.<a billion zeros>1e1000000000" still comes out right, and no overflow. */
#define EXP_CLAMP INT64_C(1000000000000000)

/* Parsed pieces of a decimal number. */
typedef struct num_parts {
    int negative;
    uint64_t mant;    /* first <= 19 significant digits */
    int ndigits;      /* significant digits held in mant */
    int dropped;      /* significant digits that did not fit in mant */
    int64_t exp10;    /* value = mant * 10^exp10 (when dropped == 0) */
} num_parts;

static const double pow10_dbl[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6,
                                   1e7, 1e8, 1e9, 1e10, 1e11, 1e12};

static const uint64_t pow10_u64[] = {1ull,
                                     10ull,
                                     100ull,
                                     1000ull,
                                     10000ull,
                                     100000ull,
                                     1000000ull,
                                     10000000ull,
                                     100000000ull,
                                     1000000000ull,
                                     10000000000ull,
                                     100000000000ull,
                                     1000000000000ull,
                                     10000000000000ull,
                                     100000000000000ull,
                                     1000000000000000ull,
                                     10000000000000000ull,
                                     100000000000000000ull,
                                     1000000000000000000ull,
                                     10000000000000000000ull};

static int lower_ascii(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Case-insensitive match of [p, end) against a lower-case word. */
static int word_is(const char *p, const char *end, const char *word)
{
    const size_t n = strlen(word);
    if ((size_t)(end - p) != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (lower_ascii((unsigned char)p[i]) != word[i]) {
            return 0;
        }
    }
    return 1;
}

static int special_value(const char *p, const char *end, int negative, float *out)
{
    if (word_is(p, end, "nan")) {
        *out = negative ? -NAN : NAN;
        return 0;
    }
    if (word_is(p, end, "inf") || word_is(p, end, "infinity")) {
        *out = negative ? -INFINITY : INFINITY;
        return 0;
    }
    return -1;
}

static void take_digit(num_parts *n, int d, int after_point)
{
    if (n->ndigits == 0 && d == 0) {
        /* leading zero: not significant, but fraction zeros shift the scale */
        if (after_point) {
            n->exp10--;
        }
        return;
    }
    if (n->ndigits < MAX_FAST_DIGITS) {
        n->mant = n->mant * 10u + (uint64_t)d;
        n->ndigits++;
        if (after_point) {
            n->exp10--;
        }
    } else {
        n->dropped++;
        if (!after_point) {
            n->exp10++;
        }
    }
}

/* Parse the exponent part after 'e'/'E' (already validated by scan_decimal). */
static int64_t explicit_exponent(const char *q, const char *end)
{
    int eneg = 0;
    int64_t e = 0;
    if (q < end && (*q == '+' || *q == '-')) {
        eneg = (*q == '-');
        q++;
    }
    while (q < end && *q >= '0' && *q <= '9') {
        if (e < EXP_CLAMP) {
            e = e * 10 + (*q - '0');
        }
        q++;
    }
    return eneg ? -e : e;
}

/* Scan the mantissa and exponent of all of [p, end). Returns 0, or -1 when
 * the text is not a decimal number. */
static int scan_decimal(const char *p, const char *end, num_parts *n)
{
    int any = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        take_digit(n, *p - '0', 0);
        any = 1;
        p++;
    }
    if (p < end && *p == '.') {
        p++;
        while (p < end && *p >= '0' && *p <= '9') {
            take_digit(n, *p - '0', 1);
            any = 1;
            p++;
        }
    }
    if (!any) {
        return -1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        const char *q = p + 1;
        if (q < end && (*q == '+' || *q == '-')) {
            q++;
        }
        if (q == end || *q < '0' || *q > '9') {
            return -1;
        }
        n->exp10 += explicit_exponent(p + 1, end);
        p = q;
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }
    return p == end ? 0 : -1;
}

/* Correctly rounded fallback through strtof on a locale-proof canonical copy,
 * "[-]DIGITS[1]e<exp>", DIGITS being the significant digits in order.
 * p points just after the sign of text scan_decimal already accepted. */
static float slow_path(int negative, const char *p, const char *end)
{
    char buf[MAX_SLOW_DIGITS + 48];
    size_t len = 0;
    int64_t exp10 = 0; /* value = DIGITS * 10^exp10 */
    int kept = 0;
    int seen_point = 0;
    int sticky = 0;
    if (negative) {
        buf[len++] = '-';
    }
    for (; p < end && *p != 'e' && *p != 'E'; p++) {
        const char c = *p;
        if (c == '.') {
            seen_point = 1;
        } else if (kept == 0 && c == '0') {
            exp10 -= seen_point; /* leading zero: only the scale moves */
        } else if (kept < MAX_SLOW_DIGITS) {
            buf[len++] = c;
            kept++;
            exp10 -= seen_point;
        } else {
            sticky |= (c != '0');
            exp10 += !seen_point;
        }
    }
    if (p < end) {
        exp10 += explicit_exponent(p + 1, end);
    }
    if (sticky) {
        /* one more non-zero digit keeps "just above a midpoint" visible */
        buf[len++] = '1';
        exp10--;
    }
    if (exp10 > OUT_EXP_CLAMP) {
        exp10 = OUT_EXP_CLAMP;
    } else if (exp10 < -OUT_EXP_CLAMP) {
        exp10 = -OUT_EXP_CLAMP;
    }
    buf[len++] = 'e';
    if (exp10 < 0) {
        buf[len++] = '-';
        exp10 = -exp10;
    }
    char tmp[24];
    size_t t = 0;
    do {
        tmp[t++] = (char)('0' + exp10 % 10);
        exp10 /= 10;
    } while (exp10 > 0);
    while (t > 0) {
        buf[len++] = tmp[--t];
    }
    buf[len] = '\0';
    /* strtof reports range errors through errno; callers should not see it */
    const int saved = errno;
    const float v = strtof(buf, NULL);
    errno = saved;
    return v;
}

int aimsi_parse_float(const char *p, const char *end, float *out)
{
    if (p == NULL || end == NULL || p >= end) {
        return -1;
    }
    num_parts n = {0, 0, 0, 0, 0};
    if (*p == '+' || *p == '-') {
        n.negative = (*p == '-');
        p++;
        if (p == end) {
            return -1;
        }
    }
    const char *const start = p;
    if (!((*p >= '0' && *p <= '9') || *p == '.')) {
        return special_value(p, end, n.negative, out);
    }
    if (scan_decimal(p, end, &n) != 0) {
        return -1;
    }
    if (n.ndigits == 0) {
        *out = n.negative ? -0.0f : 0.0f;
        return 0;
    }
    float v;
    if (n.dropped == 0 && n.exp10 >= 0 && n.exp10 <= MAX_FAST_DIGITS &&
        n.mant <= UINT64_MAX / pow10_u64[n.exp10]) {
        v = (float)(n.mant * pow10_u64[n.exp10]);
    } else if (n.dropped == 0 && n.exp10 < 0 && n.exp10 >= -12 &&
               n.mant <= (UINT64_C(1) << 53)) {
        v = (float)((double)n.mant / pow10_dbl[-n.exp10]);
    } else {
        *out = slow_path(n.negative, start, end);
        return 0;
    }
    *out = n.negative ? -v : v;
    return 0;
}

void aimsi_excerpt(const char *b, const char *e, char *buf, size_t cap)
{
    enum { EXCERPT_BYTES = 24 };
    size_t k = 0;
    size_t n = 0;
    for (const char *p = b; p < e && n < EXCERPT_BYTES && k + 8 < cap; p++, n++) {
        const unsigned char ch = (unsigned char)*p;
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            buf[k++] = (char)ch;
        } else {
            k += (size_t)snprintf(buf + k, cap - k, "\\x%02x", ch);
        }
    }
    if (b + n < e && k + 4 < cap) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
}
