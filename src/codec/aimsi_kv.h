/*
 * aimsi_kv.h -- bounded readers for the two text shapes that arrive from the
 * network outside the binary frame: "key=value" token lists (the train
 * service's "spec") and '\n'-terminated field lists (the registry messages'
 * joined services / addresses / secrets). The readers only split bytes; what a
 * key or a field means stays with the caller in src/svc.
 *
 * Both readers borrow the caller's bytes (no NUL terminator needed), never
 * read outside [bytes, bytes + len), never allocate, and treat a NUL byte as
 * damage, so a parser built on them can only fail with a status.
 */
#ifndef AIMSI_KV_H
#define AIMSI_KV_H

#include <stddef.h>

/* ---- key=value tokens ------------------------------------------------------------ */

/* Cursor over "key=value" tokens separated by blanks, tabs, CR or LF; '#' at
 * the start of a token starts a comment that runs to the end of the line. */
typedef struct aimsi_kv {
    const char *p;
    const char *end;
} aimsi_kv;

/* One token: key and value are slices of the input (not NUL-terminated). On
 * AIMSI_KV_BAD, tok/tok_len is the whole offending token. */
typedef struct aimsi_kv_pair {
    const char *key;
    size_t key_len;
    const char *val;
    size_t val_len;
    const char *tok;
    size_t tok_len;
} aimsi_kv_pair;

enum {
    AIMSI_KV_END = 0,  /* no more tokens */
    AIMSI_KV_PAIR = 1, /* *out holds the next pair (the value may be empty) */
    AIMSI_KV_BAD = -1  /* a token without '=' or with an empty key, or a NUL byte */
};

void aimsi_kv_init(aimsi_kv *r, const void *bytes, size_t len);
/* Next token; AIMSI_KV_PAIR, AIMSI_KV_END or AIMSI_KV_BAD (the cursor then
 * stands after the bad token, so a caller may report it and stop). */
int aimsi_kv_next(aimsi_kv *r, aimsi_kv_pair *out);
/* Copy a slice into buf (cap bytes, NUL-terminated); 0 when it does not fit. */
int aimsi_kv_copy(const char *s, size_t n, char *buf, size_t cap);

/* ---- '\n'-terminated field lists --------------------------------------------------- */

/* Next '\n'-terminated field at *p (before end), copied into buf (cap bytes,
 * NUL-terminated) and *p moved past its newline. 0 (and *p unchanged) when
 * there is none, it is empty, holds a NUL byte or does not fit in buf. */
int aimsi_kv_field_next(const char **p, const char *end, char *buf, size_t cap);

/* One whole field of n bytes (a tensor's BYTES), copied into buf (cap bytes,
 * NUL-terminated): 0 when it is empty, does not fit, or holds a NUL or a '\n'
 * (which would break a '\n'-joined list it is later put into). */
int aimsi_kv_field_copy(const char *p, size_t n, char *buf, size_t cap);

/* Split bytes into exactly `want` '\n'-separated lines (a final '\n' is
 * optional; empty lines count) into starts[] and lens[]. Returns the number of
 * lines found, which is want on success; when the bytes hold more lines, want
 * + 1 (and only the first want are stored). A line is never read past len. */
size_t aimsi_kv_lines(const char *bytes, size_t len, size_t want, const char **starts,
                      size_t *lens);

#endif /* AIMSI_KV_H */
