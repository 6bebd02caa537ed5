/*
 * http_buf.c -- a growable byte buffer for HTTP response bodies. Appends never
 * fail loudly: on out-of-memory the buffer remembers it (failed = 1) and the
 * server answers 500 instead of sending a truncated body.
 */
#include <stdio.h>
#include <string.h>

#include "aimsi_http.h"

static int hbuf_reserve(aimsi_hbuf *b, size_t extra)
{
    if (b->failed) {
        return 0;
    }
    if (b->len + extra + 1 <= b->cap) {
        return 1;
    }
    size_t want = b->cap < 256 ? 256 : b->cap;
    while (want < b->len + extra + 1) {
        if (want > SIZE_MAX / 2) {
            b->failed = 1;
            return 0;
        }
        want *= 2;
    }
    char *q = aimsi_realloc(b->p, want);
    if (q == NULL) {
        b->failed = 1;
        return 0;
    }
    b->p = q;
    b->cap = want;
    return 1;
}

void aimsi_hbuf_add(aimsi_hbuf *b, const void *data, size_t n)
{
    if (!hbuf_reserve(b, n)) {
        return;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void aimsi_hbuf_str(aimsi_hbuf *b, const char *s)
{
    aimsi_hbuf_add(b, s, strlen(s));
}

/* Decimal digits of v, without a vsnprintf (the binary infer reply's numbers). */
void aimsi_hbuf_u64(aimsi_hbuf *b, uint64_t v)
{
    char d[20];
    size_t n = 0;
    do {
        d[sizeof d - ++n] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0);
    aimsi_hbuf_add(b, d + sizeof d - n, n);
}

void aimsi_hbuf_printf(aimsi_hbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    const int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n < sizeof(small)) {
        aimsi_hbuf_add(b, small, (size_t)n);
        return;
    }
    if (!hbuf_reserve(b, (size_t)n)) {
        return;
    }
    va_start(ap, fmt);
    (void)vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void aimsi_hbuf_json_str(aimsi_hbuf *b, const char *s, size_t n)
{
    aimsi_hbuf_add(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        aimsi_hbuf_add(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': aimsi_hbuf_add(b, "\\\"", 2); break;
        case '\\': aimsi_hbuf_add(b, "\\\\", 2); break;
        case '\n': aimsi_hbuf_add(b, "\\n", 2); break;
        case '\r': aimsi_hbuf_add(b, "\\r", 2); break;
        case '\t': aimsi_hbuf_add(b, "\\t", 2); break;
        default: aimsi_hbuf_printf(b, "\\u%04x", c); break;
        }
    }
    aimsi_hbuf_add(b, s + run, n - run);
    aimsi_hbuf_add(b, "\"", 1);
}

void aimsi_hbuf_html(aimsi_hbuf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '<': aimsi_hbuf_str(b, "&lt;"); break;
        case '>': aimsi_hbuf_str(b, "&gt;"); break;
        case '&': aimsi_hbuf_str(b, "&amp;"); break;
        case '"': aimsi_hbuf_str(b, "&quot;"); break;
        default: aimsi_hbuf_add(b, s, 1); break;
        }
    }
}

void aimsi_hbuf_free(aimsi_hbuf *b)
{
    aimsi_free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}
