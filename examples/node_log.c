/*
 * node_log.c -- log sink and environment flags of the installed programs
 * (see node_log.h for the formats).
 *
 * Why one sink for library and program. An operator reads one stream: the
 * daemon's own "cannot load bundle" and the library's "registry unreachable"
 * must look alike and carry the same timestamp format. The sink writes each
 * record with a single fprintf on an unbuffered stderr, so records from the
 * library's threads do not interleave within a line.
 */
#include "node_log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { FMT_AUTO = 0, FMT_HUMAN = 1, FMT_JSON = 2 };

static int g_format = FMT_AUTO;
static aims_log_level g_level = AIMS_LOG_INFO;
static const char *g_program = "aims";

int nlog_set_format(const char *format)
{
    if (strcmp(format, "auto") == 0) {
        g_format = FMT_AUTO;
    } else if (strcmp(format, "human") == 0 || strcmp(format, "text") == 0) {
        g_format = FMT_HUMAN;
    } else if (strcmp(format, "json") == 0) {
        g_format = FMT_JSON;
    } else {
        return -1;
    }
    return 0;
}

int nlog_set_level(const char *level)
{
    static const struct {
        const char *name;
        aims_log_level level;
    } k_levels[] = {{"debug", AIMS_LOG_DEBUG}, {"info", AIMS_LOG_INFO},
                    {"warn", AIMS_LOG_WARN},   {"warning", AIMS_LOG_WARN},
                    {"error", AIMS_LOG_ERROR}, {"off", AIMS_LOG_OFF}};
    for (size_t i = 0; i < sizeof k_levels / sizeof k_levels[0]; i++) {
        if (strcmp(level, k_levels[i].name) == 0) {
            g_level = k_levels[i].level;
            return 0;
        }
    }
    return -1;
}

static const char *level_name(aims_log_level level)
{
    switch (level) {
    case AIMS_LOG_DEBUG: return "debug";
    case AIMS_LOG_INFO: return "info";
    case AIMS_LOG_WARN: return "warn";
    default: return "error";
    }
}

/* msg as a JSON string body (quotes, backslashes, control bytes escaped). */
static void json_escape(const char *msg, char *out, size_t cap)
{
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p != '\0' && k + 8 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[k++] = '\\';
            out[k++] = (char)*p;
        } else if (*p < 0x20) {
            k += (size_t)snprintf(out + k, cap - k, "\\u%04x", *p);
        } else {
            out[k++] = (char)*p;
        }
    }
    out[k] = '\0';
}

static void emit(const char *src, aims_log_level level, const char *msg)
{
    if (level < g_level || level >= AIMS_LOG_OFF) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    const size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000L);
    const int json = g_format == FMT_JSON || (g_format == FMT_AUTO && !isatty(STDERR_FILENO));
    if (json) {
        char body[2200];
        json_escape(msg, body, sizeof body);
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"src\":\"%s\",\"pid\":%ld,\"msg\":\"%s\"}\n",
                when, level_name(level), src, (long)getpid(), body);
    } else {
        char upper[8];
        const char *ln = level_name(level);
        size_t i = 0;
        for (; ln[i] != '\0' && i + 1 < sizeof upper; i++) {
            upper[i] = (char)toupper((unsigned char)ln[i]);
        }
        upper[i] = '\0';
        fprintf(stderr, "%s %-5s %s: %s\n", when, upper, src, msg);
    }
}

static void lib_sink(void *user, aims_log_level level, const char *msg)
{
    (void)user;
    emit("libaims", level, msg);
}

void nlog_install(const char *program)
{
    g_program = program;
    setvbuf(stderr, NULL, _IONBF, 0);
    (void)aims_set_log(lib_sink, NULL, g_level < AIMS_LOG_OFF ? g_level : AIMS_LOG_OFF);
}

void nlog(aims_log_level level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(g_program, level, msg);
}

/* ---- environment ------------------------------------------------------------------ */

static int in_list(const char *flag, const char *const *list)
{
    for (size_t i = 0; list != NULL && list[i] != NULL; i++) {
        if (strcmp(flag, list[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static int truthy(const char *v)
{
    return strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
           strcmp(v, "on") == 0;
}

extern char **environ;

char **nenv_argv;


char **nenv_args(const char *prefix, int argc, char **argv, const char *const *repeatable,
                 const char *const *switches, int *out_argc)
{
    const size_t plen = strlen(prefix);
    size_t cap = (size_t)argc + 1;
    for (char **e = environ; *e != NULL; e++) {
        if (strncmp(*e, prefix, plen) == 0) {
            cap += 2 + 2 * strlen(*e); /* worst case: a value of commas */
        }
    }
    char **out = calloc(cap, sizeof *out);
    if (out == NULL) {
        return NULL;
    }
    int n = 0;
    out[n++] = argv[0];
    for (char **e = environ; *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (strncmp(*e, prefix, plen) != 0 || eq == NULL || eq == *e + plen) {
            continue;
        }
        const size_t flen = (size_t)(eq - (*e + plen));
        char *flag = malloc(flen + 3);
        if (flag == NULL) {
            return NULL;
        }
        flag[0] = '-';
        flag[1] = '-';
        for (size_t i = 0; i < flen; i++) {
            const char c = (*e)[plen + i];
            flag[2 + i] = c == '_' ? '-' : (char)tolower((unsigned char)c);
        }
        flag[2 + flen] = '\0';
        const char *val = eq + 1;
        if (in_list(flag + 2, switches)) {
            if (truthy(val)) {
                out[n++] = flag;
            }
            continue;
        }
        if (!in_list(flag + 2, repeatable)) {
            out[n++] = flag;
            out[n++] = strdup(val);
            continue;
        }
        const char *p = val;
        for (;;) {
            const char *comma = strchr(p, ',');
            const size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
            if (len > 0) {
                out[n++] = flag;
                out[n++] = strndup(p, len);
            }
            if (comma == NULL) {
                break;
            }
            p = comma + 1;
        }
    }
    for (int i = 1; i < argc; i++) {
        out[n++] = argv[i];
    }
    out[n] = NULL;
    *out_argc = n;
    nenv_argv = out;
    return out;
}
