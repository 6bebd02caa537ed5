/*
 * cli_json.h -- a small JSON reader for the `aims` command line (tools/ only).
 *
 * `aims call` reads request tensors as JSON and `aims plot` reads the JSON
 * lines `aims train` and bench/ write. Both need a tree of numbers, strings,
 * arrays and objects and nothing more, so the CLI carries this ~250-line
 * reader instead of a dependency: the library's own JSON (cJSON, behind the
 * http front door in src/) is not part of the public API the CLI is limited
 * to. Limits: nesting depth 64; numbers as double; \uXXXX escapes decoded to
 * UTF-8 (surrogate pairs joined). Errors name the byte offset.
 */
#ifndef CLI_JSON_H
#define CLI_JSON_H

#include <stddef.h>

typedef enum cj_kind { CJ_NULL, CJ_BOOL, CJ_NUM, CJ_STR, CJ_ARR, CJ_OBJ } cj_kind;

typedef struct cj {
    cj_kind kind;
    double num;       /* CJ_NUM, CJ_BOOL (0/1) */
    char *str;        /* CJ_STR: NUL-terminated (may hold NULs: see len) */
    size_t len;       /* CJ_STR bytes; CJ_ARR/CJ_OBJ children */
    char *key;        /* member name when inside an object */
    struct cj *child; /* first element / member */
    struct cj *next;  /* next sibling */
} cj;

/* Parse all of @p text (trailing white space allowed). NULL on error, with a
 * message naming the byte offset in @p err. */
cj *cj_parse(const char *text, size_t len, char *err, size_t errcap);
void cj_free(cj *v);
/* Member @p key of an object, or NULL. */
const cj *cj_get(const cj *obj, const char *key);

#endif /* CLI_JSON_H */
