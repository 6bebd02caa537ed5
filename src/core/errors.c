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

/* Both lookups are generated from AIMS_STATUS_MAP (aims_core.h), so a new row
 * there is a new case here; a duplicate value fails to compile (duplicate case). */
const char *aims_strerror(aims_status code)
{
    switch (code) {
#define AIMSI_STATUS_TEXT_(name, value, text) \
    case name:                                \
        return text;
        AIMS_STATUS_MAP(AIMSI_STATUS_TEXT_)
#undef AIMSI_STATUS_TEXT_
    }
    return "unknown status";
}

const char *aims_status_name(aims_status code)
{
    switch (code) {
#define AIMSI_STATUS_NAME_(name, value, text) \
    case name:                                \
        return #name;
        AIMS_STATUS_MAP(AIMSI_STATUS_NAME_)
#undef AIMSI_STATUS_NAME_
    }
    return NULL;
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
