/*
 * errors.c -- status text, per-handle and thread-local error messages.
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

const char *aims_strerror(aims_status code)
{
    switch (code) {
    case AIMS_OK: return "ok";
    case AIMS_E_MISUSE: return "API misuse";
    case AIMS_E_NOMEM: return "out of memory";
    case AIMS_E_INVAL: return "invalid argument";
    case AIMS_E_RANGE: return "out of range";
    case AIMS_E_CORRUPT: return "corrupt input";
    case AIMS_E_IO: return "I/O error";
    case AIMS_E_UNSUPPORTED: return "unsupported";
    case AIMS_E_NOTFOUND: return "not found";
    case AIMS_E_STATE: return "invalid state";
    case AIMS_E_BACKEND: return "backend failure";
    case AIMS_E_CANCELLED: return "cancelled";
    case AIMS_E_TIMEOUT: return "timed out";
    case AIMS_E_OVERLOADED: return "overloaded";
    case AIMS_E_CLOSED: return "closed";
    case AIMS_E_EXISTS: return "already exists";
    case AIMS_E_INTERNAL: return "internal error";
    case AIMS_E_DENIED: return "permission denied";
    }
    return "unknown status";
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

void aimsi_obj_kill(aimsi_obj *obj)
{
    obj->magic = 0xdeadbeefu;
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
