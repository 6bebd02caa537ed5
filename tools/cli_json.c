/*
 * cli_json.c -- recursive-descent JSON reader for the CLI (see cli_json.h).
 *
 * One pass over the text, one allocation per value; the depth cap keeps a
 * hostile file ("[[[[...") from exhausting the stack. Every read checks the
 * remaining length first.
 */
#include "cli_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CJ_MAX_DEPTH 64

typedef struct rd {
    const char *s;
    size_t n, i;
    char *err;
    size_t errcap;
} rd;

static void *bad(rd *r, const char *what)
{
    if (r->err != NULL && r->err[0] == '\0') {
        snprintf(r->err, r->errcap, "JSON: %s at byte %zu", what, r->i);
    }
    return NULL;
}

static void skip_ws(rd *r)
{
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' ||
                           r->s[r->i] == '\r')) {
        r->i++;
    }
}

static cj *new_value(cj_kind kind)
{
    cj *v = calloc(1, sizeof *v);
    if (v != NULL) {
        v->kind = kind;
    }
    return v;
}

static int hex4(rd *r, unsigned *out)
{
    if (r->n - r->i < 4) {
        return -1;
    }
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        const char c = r->s[r->i++];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (unsigned)(c - 'A' + 10);
        } else {
            return -1;
        }
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* r->i is just past the opening quote. The decoded text is never longer
 * than the escaped text, so one buffer of the remaining length is enough. */
static char *read_string(rd *r, size_t *out_len)
{
    size_t end = r->i;
    while (end < r->n && r->s[end] != '"') {
        end += r->s[end] == '\\' ? 2 : 1;
    }
    if (end >= r->n) {
        return bad(r, "unterminated string");
    }
    char *o = malloc(end - r->i + 1);
    if (o == NULL) {
        return bad(r, "out of memory");
    }
    size_t k = 0;
    while (r->i < end) {
        const char c = r->s[r->i++];
        if ((unsigned char)c < 0x20) {
            free(o);
            return bad(r, "control character in string");
        }
        if (c != '\\') {
            o[k++] = c;
            continue;
        }
        const char e = r->s[r->i++];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e != '\0' && simple != NULL) {
            o[k++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        unsigned cp = 0;
        if (e != 'u' || hex4(r, &cp) != 0) {
            free(o);
            return bad(r, "bad escape in string");
        }
        if (cp >= 0xD800 && cp < 0xDC00 && r->n - r->i >= 6 && r->s[r->i] == '\\' &&
            r->s[r->i + 1] == 'u') {
            unsigned lo = 0;
            r->i += 2;
            if (hex4(r, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) {
                free(o);
                return bad(r, "bad surrogate pair");
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) { /* a lone surrogate is no character */
            free(o);
            return bad(r, "lone surrogate in string");
        }
        k += put_utf8(o + k, cp);
    }
    r->i = end + 1;
    o[k] = '\0';
    *out_len = k;
    return o;
}

static cj *read_value(rd *r, int depth);

static cj *read_container(rd *r, int depth, int is_obj)
{
    cj *v = new_value(is_obj ? CJ_OBJ : CJ_ARR);
    if (v == NULL) {
        return bad(r, "out of memory");
    }
    cj **tail = &v->child;
    const char close = is_obj ? '}' : ']';
    skip_ws(r);
    if (r->i < r->n && r->s[r->i] == close) {
        r->i++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        if (is_obj) {
            skip_ws(r);
            size_t klen = 0;
            if (r->i >= r->n || r->s[r->i] != '"') {
                cj_free(v);
                return bad(r, "expected a member name");
            }
            r->i++;
            key = read_string(r, &klen);
            skip_ws(r);
            if (key == NULL || r->i >= r->n || r->s[r->i] != ':') {
                free(key);
                cj_free(v);
                return bad(r, "expected ':'");
            }
            r->i++;
        }
        cj *e = read_value(r, depth + 1);
        if (e == NULL) {
            free(key);
            cj_free(v);
            return NULL;
        }
        e->key = key;
        *tail = e;
        tail = &e->next;
        v->len++;
        skip_ws(r);
        if (r->i < r->n && r->s[r->i] == ',') {
            r->i++;
            continue;
        }
        if (r->i < r->n && r->s[r->i] == close) {
            r->i++;
            return v;
        }
        cj_free(v);
        return bad(r, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int word(rd *r, const char *w)
{
    const size_t k = strlen(w);
    if (r->n - r->i >= k && memcmp(r->s + r->i, w, k) == 0) {
        r->i += k;
        return 1;
    }
    return 0;
}

static cj *read_value(rd *r, int depth)
{
    if (depth > CJ_MAX_DEPTH) {
        return bad(r, "nested too deeply");
    }
    skip_ws(r);
    if (r->i >= r->n) {
        return bad(r, "unexpected end");
    }
    const char c = r->s[r->i];
    if (c == '{' || c == '[') {
        r->i++;
        return read_container(r, depth, c == '{');
    }
    if (c == '"') {
        r->i++;
        size_t len = 0;
        char *s = read_string(r, &len);
        cj *v = s != NULL ? new_value(CJ_STR) : NULL;
        if (v == NULL) {
            free(s);
            return s != NULL ? bad(r, "out of memory") : NULL;
        }
        v->str = s;
        v->len = len;
        return v;
    }
    if (word(r, "true") || word(r, "false") || word(r, "null")) {
        cj *v = new_value(c == 'n' ? CJ_NULL : CJ_BOOL);
        if (v != NULL) {
            v->num = c == 't';
        }
        return v != NULL ? v : bad(r, "out of memory");
    }
    /* a number: strtod needs a NUL-terminated copy of at most 64 bytes */
    char buf[65];
    size_t k = 0;
    while (r->i + k < r->n && k < 64 && strchr("+-0123456789.eE", r->s[r->i + k]) != NULL &&
           r->s[r->i + k] != '\0') {
        buf[k] = r->s[r->i + k];
        k++;
    }
    buf[k] = '\0';
    char *end = NULL;
    const double d = k > 0 ? strtod(buf, &end) : 0;
    if (k == 0 || end != buf + k) {
        return bad(r, "bad value");
    }
    r->i += k;
    cj *v = new_value(CJ_NUM);
    if (v == NULL) {
        return bad(r, "out of memory");
    }
    v->num = d;
    return v;
}

cj *cj_parse(const char *text, size_t len, char *err, size_t errcap)
{
    rd r = {text, len, 0, err, errcap};
    if (err != NULL && errcap > 0) {
        err[0] = '\0';
    }
    cj *v = read_value(&r, 0);
    if (v == NULL) {
        return NULL;
    }
    skip_ws(&r);
    if (r.i != r.n) {
        cj_free(v);
        return bad(&r, "trailing characters");
    }
    return v;
}

void cj_free(cj *v)
{
    while (v != NULL) {
        cj *next = v->next;
        cj_free(v->child);
        free(v->str);
        free(v->key);
        free(v);
        v = next;
    }
}

const cj *cj_get(const cj *obj, const char *key)
{
    if (obj == NULL || obj->kind != CJ_OBJ) {
        return NULL;
    }
    for (const cj *e = obj->child; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}
