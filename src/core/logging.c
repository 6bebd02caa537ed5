/*
 * logging.c -- the library's only voice: a host callback.
 *
 * The level check happens before formatting so disabled debug logging costs a
 * load and a compare. Messages longer than 512 bytes are truncated.
 */
#include <stdio.h>

#include "aimsi_core.h"

static aims_log_fn g_log_fn;
static void *g_log_user;
static aims_log_level g_log_min = AIMS_LOG_OFF;

aims_status aims_set_log(aims_log_fn fn, void *user, aims_log_level min_level)
{
    switch (min_level) {
    case AIMS_LOG_DEBUG:
    case AIMS_LOG_INFO:
    case AIMS_LOG_WARN:
    case AIMS_LOG_ERROR:
    case AIMS_LOG_OFF:
        break;
    default:
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_set_log: unknown level %d", (int)min_level);
    }
    g_log_fn = fn;
    g_log_user = user;
    g_log_min = fn == NULL ? AIMS_LOG_OFF : min_level;
    return AIMS_OK;
}

int aimsi_log_enabled(aims_log_level level)
{
    return g_log_fn != NULL && level >= g_log_min && level < AIMS_LOG_OFF;
}

void aimsi_log(aims_log_level level, const char *fmt, ...)
{
    if (!aimsi_log_enabled(level)) {
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g_log_fn(g_log_user, level, msg);
}
