/*
 * kv.c -- the key=value token reader and the '\n' field-list reader
 * (aimsi_kv.h): the byte-level half of the train spec (svc/train_spec.c) and
 * of the registry messages (svc/svc_registry.c, svc/registry/regbk_service.c).
 *
 * Why here. DESIGN §1 puts everything that parses bytes in src/codec, and
 * both inputs come from the network. Keeping the splitting apart from the
 * meaning lets one fuzz target (tests/fuzz/fuzz_kv.c) hammer the bounds logic
 * directly, while the svc side keeps only checks on keys and values.
 *
 * How. Both readers walk a [p, end) slice with memchr-style scans; they hand
 * back slices of the caller's memory instead of copies, so nothing is
 * allocated and there is nothing to leak. The only copy is the explicit,
 * capped aimsi_kv_copy / aimsi_kv_field_next into a caller buffer.
 */
#include <string.h>

#include "aimsi_kv.h"

static int is_sep(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

void aimsi_kv_init(aimsi_kv *r, const void *bytes, size_t len)
{
    r->p = bytes != NULL ? (const char *)bytes : "";
    r->end = r->p + (bytes != NULL ? len : 0);
}

/* Skip separators and whole-line comments; stop at a token's first byte. */
static void skip_blank(aimsi_kv *r)
{
    while (r->p < r->end) {
        if (is_sep(*r->p)) {
            r->p++;
        } else if (*r->p == '#') {
            const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
            r->p = nl != NULL ? nl + 1 : r->end;
        } else {
            return;
        }
    }
}

int aimsi_kv_next(aimsi_kv *r, aimsi_kv_pair *out)
{
    skip_blank(r);
    if (r->p == r->end) {
        return AIMSI_KV_END;
    }
    const char *tok = r->p;
    while (r->p < r->end && !is_sep(*r->p)) {
        r->p++;
    }
    const size_t n = (size_t)(r->p - tok);
    memset(out, 0, sizeof *out);
    out->tok = tok;
    out->tok_len = n;
    const char *eq = memchr(tok, '=', n);
    if (eq == NULL || eq == tok || memchr(tok, '\0', n) != NULL) {
        return AIMSI_KV_BAD;
    }
    out->key = tok;
    out->key_len = (size_t)(eq - tok);
    out->val = eq + 1;
    out->val_len = n - out->key_len - 1;
    return AIMSI_KV_PAIR;
}

int aimsi_kv_copy(const char *s, size_t n, char *buf, size_t cap)
{
    if (cap == 0 || n >= cap) {
        return 0;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    return 1;
}

int aimsi_kv_field_copy(const char *p, size_t n, char *buf, size_t cap)
{
    if (p == NULL || n == 0 || memchr(p, '\0', n) != NULL || memchr(p, '\n', n) != NULL) {
        return 0;
    }
    return aimsi_kv_copy(p, n, buf, cap);
}

int aimsi_kv_field_next(const char **p, const char *end, char *buf, size_t cap)
{
    if (*p == NULL || end == NULL || *p >= end) {
        return 0;
    }
    const size_t left = (size_t)(end - *p);
    const char *nl = memchr(*p, '\n', left);
    if (nl == NULL || nl == *p) {
        return 0;
    }
    const size_t n = (size_t)(nl - *p);
    if (memchr(*p, '\0', n) != NULL || !aimsi_kv_copy(*p, n, buf, cap)) {
        return 0;
    }
    *p = nl + 1;
    return 1;
}

size_t aimsi_kv_lines(const char *bytes, size_t len, size_t want, const char **starts,
                      size_t *lens)
{
    if (bytes == NULL || len == 0) {
        return 0;
    }
    size_t n = 0;
    const char *p = bytes;
    const char *const end = bytes + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl != NULL ? nl : end;
        if (n == want) {
            return want + 1;
        }
        starts[n] = p;
        lens[n] = (size_t)(stop - p);
        n++;
        p = nl != NULL ? nl + 1 : end;
    }
    return n;
}
