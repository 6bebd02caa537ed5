/*
 * reach.c -- is the registry reachable, since when not, and why.
 *
 * Why. A node or client that joined a registry it cannot reach keeps working
 * on its last view (static stability), so nothing fails loudly: the daemon
 * printed "ready" and then nothing, and a client said only "no live instance".
 * An operator needs the cause. Each joined registry (a client's sync loop, a
 * node's registrations) therefore keeps one aimsi_reach: every call outcome is
 * recorded; the first failure after success (or the very first failure) logs
 * an ERROR naming the URL and the cause, recovery logs an INFO, and repeated
 * failures stay quiet (a retry loop every 200 ms must not flood the log).
 * aimsi_reach_describe() words the state for error messages: "registry
 * tcp://h:p unreachable since 02:51:07 UTC (12.4 s ago), last error: ...".
 *
 * Threads. The struct has its own mutex; record and describe may run on any
 * thread. Logging happens outside the lock.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../core/aimsi_core.h"
#include "aimsi_reach.h"

void aimsi_reach_init(aimsi_reach *r, const char *what, const char *url)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    snprintf(r->what, sizeof r->what, "%s", what);
    snprintf(r->url, sizeof r->url, "%s", url);
}

void aimsi_reach_fini(aimsi_reach *r)
{
    pthread_mutex_destroy(&r->lock);
}

void aimsi_reach_record(aimsi_reach *r, aims_status rc, const char *errmsg)
{
    int log_down = 0;
    int log_up = 0;
    char err[sizeof r->last_err];
    pthread_mutex_lock(&r->lock);
    if (rc == AIMS_OK) {
        log_up = r->failing;
        r->failing = 0;
        r->ever_ok = 1;
    } else {
        snprintf(r->last_err, sizeof r->last_err, "%s%s%s", aims_strerror(rc),
                 errmsg != NULL && errmsg[0] != '\0' ? ": " : "",
                 errmsg != NULL ? errmsg : "");
        if (!r->failing) {
            r->failing = 1;
            r->since_wall = time(NULL);
            r->since_ns = aimsi_now_ns();
            log_down = 1;
        }
        r->failures++;
    }
    memcpy(err, r->last_err, sizeof err);
    pthread_mutex_unlock(&r->lock);
    if (log_down) {
        aimsi_log(AIMS_LOG_ERROR, "%s: registry %s unreachable: %s (retrying)", r->what, r->url,
                  err);
    } else if (log_up) {
        aimsi_log(AIMS_LOG_INFO, "%s: registry %s reachable again", r->what, r->url);
    }
}

size_t aimsi_reach_describe(aimsi_reach *r, char *buf, size_t cap)
{
    if (cap == 0) {
        return 0;
    }
    buf[0] = '\0';
    pthread_mutex_lock(&r->lock);
    if (r->failing) {
        struct tm tm;
        char when[32] = "?";
        if (gmtime_r(&r->since_wall, &tm) != NULL) {
            strftime(when, sizeof when, "%H:%M:%S UTC", &tm);
        }
        const double ago = (double)(aimsi_now_ns() - r->since_ns) / 1e9;
        snprintf(buf, cap, "registry %s unreachable since %s (%.1f s ago, %llu failed tries), "
                 "last error: %s", r->url, when, ago, (unsigned long long)r->failures,
                 r->last_err);
    }
    pthread_mutex_unlock(&r->lock);
    return strlen(buf);
}
