/*
 * errors.c -- status names and text, per-handle and thread-local error messages.
 *
 * A failure is recorded twice: in the handle (so a host that owns the handle
 * can ask it later, like sqlite3_errmsg) and in a thread-local slot (so
 * constructors, which have no handle yet, and const calls, which must not write
 * to a handle other threads may be reading, can still explain themselves).
 */
#include <stdio.h>
#include <string.h>

#include "aimsi_core.h"

static _Thread_local char t_errmsg[AIMSI_ERRMSG_CAP];

/* Both lookups read one array generated from AIMS_STATUS_MAP (aims_core.h),
 * indexed by the code's value; a row reusing a value is an "initialized field
 * overwritten" warning (-Woverride-init, part of -Wextra), and the API test
 * checks every row's name and text. */
typedef struct status_row {
    const char *name;
    const char *text;
} status_row;

static const status_row k_status[] = {
#define AIMSI_STATUS_ROW_(name, value, text) [value] = {#name, text},
    AIMS_STATUS_MAP(AIMSI_STATUS_ROW_)
#undef AIMSI_STATUS_ROW_
};

static const status_row *status_row_of(aims_status code)
{
    const long v = (long)code;
    if (v < 0 || (size_t)v >= sizeof k_status / sizeof k_status[0] || k_status[v].name == NULL) {
        return NULL;
    }
    return &k_status[v];
}

const char *aims_strerror(aims_status code)
{
    const status_row *row = status_row_of(code);
    return row != NULL ? row->text : "unknown status";
}

const char *aims_status_name(aims_status code)
{
    const status_row *row = status_row_of(code);
    return row != NULL ? row->name : NULL;
}

const char *aimsi_magic_name(uint32_t magic)
{
    switch (magic) {
#define AIMSI_MAGIC_CASE_(name, value, type) \
    case value:                              \
        return type;
        AIMSI_MAGIC_MAP(AIMSI_MAGIC_CASE_)
#undef AIMSI_MAGIC_CASE_
    case AIMSI_MAGIC_DEAD:
        return "a destroyed handle";
    default:
        return NULL;
    }
}

const char *aimsi_obj_what(const void *obj)
{
    if (obj == NULL) {
        return "NULL";
    }
    const char *name = aimsi_magic_name(((const aimsi_obj *)obj)->magic);
    return name != NULL ? name : "not a libaims handle";
}

const char *aims_errmsg(void)
{
    return t_errmsg;
}

void aimsi_obj_init(aimsi_obj *obj, uint32_t magic)
{
    obj->magic = magic;
    obj->errmsg[0] = '\0';
}

int aimsi_obj_ok(const void *obj, uint32_t magic)
{
    return obj != NULL && ((const aimsi_obj *)obj)->magic == magic;
}

const char *aimsi_obj_errmsg(const void *obj, uint32_t magic)
{
    return aimsi_obj_ok(obj, magic) ? ((const aimsi_obj *)obj)->errmsg : "";
}

void aimsi_obj_kill(aimsi_obj *obj)
{
    obj->magic = AIMSI_MAGIC_DEAD;
}

aims_status aimsi_err(aimsi_obj *obj, aims_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_errmsg, sizeof t_errmsg, fmt, ap);
    va_end(ap);
    if (obj != NULL) {
        memcpy(obj->errmsg, t_errmsg, sizeof obj->errmsg);
    }
    if (aimsi_log_enabled(AIMS_LOG_DEBUG)) {
        aimsi_log(AIMS_LOG_DEBUG, "%s: %s", aims_strerror(code), t_errmsg);
    }
    return code;
}

aims_status aimsi_err_adopt(aimsi_obj *obj, aims_status code)
{
    if (obj != NULL) {
        memcpy(obj->errmsg, t_errmsg, sizeof obj->errmsg);
    }
    return code;
}
