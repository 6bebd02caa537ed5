/*
 * cli_util.c -- helpers the `aims` subcommands share (see cli_tools.h).
 */
#include "cli_tools.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <aims/aims.h>

int cli_fail(const char *what, const char *detail)
{
    const char *d = detail != NULL && detail[0] ? detail : aims_errmsg();
    if (strncmp(d, what, strlen(what)) == 0) {
        fprintf(stderr, "aims: %s\n", d); /* the library's message names the file already */
    } else {
        fprintf(stderr, "aims: %s: %s\n", what, d);
    }
    return 1;
}

int cli_parse_int(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

char *cli_read_file(const char *path, size_t *out_len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        const size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            break;
        }
        if (cap - n - 1 == 0) {
            char *more = cap < ((size_t)1 << 30) ? realloc(buf, cap * 2) : NULL;
            if (more == NULL) {
                free(buf);
                buf = NULL;
                errno = ENOMEM;
                break;
            }
            buf = more;
            cap *= 2;
        }
    }
    const int failed = buf == NULL || ferror(f);
    if (f != stdin) {
        fclose(f);
    }
    if (failed) {
        free(buf);
        if (errno == 0) {
            errno = EIO;
        }
        return NULL;
    }
    buf[n] = '\0';
    *out_len = n;
    return buf;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t k = 0;
    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        k = 2;
    } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        k = 3;
    } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        k = 4;
    }
    if (k == 0 || k > n) {
        return 0;
    }
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return k;
}

void cli_json_string(FILE *f, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c < 0x20 || c == 0x7F) {
            fprintf(f, "\\u%04x", c);
        } else if (c < 0x80) {
            fputc(c, f);
        } else {
            const size_t k = utf8_len(p + i, n - i);
            if (k == 0) {
                fprintf(f, "\\u%04x", c); /* a stray byte: its Latin-1 reading */
            } else {
                fwrite(p + i, 1, k, f);
                i += k - 1;
            }
        }
    }
    fputc('"', f);
}
