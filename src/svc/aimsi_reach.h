/*
 * aimsi_reach.h -- reachability of a joined registry (reach.c): the first
 * failure is logged once (ERROR, with URL and cause), the recovery once
 * (INFO), and error messages can say since when the registry is unreachable.
 *
 * Why its own header: the registry backends (registry/) and the join paths
 * share it; it needs nothing of the node or the client.
 */
#ifndef AIMSI_REACH_H
#define AIMSI_REACH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "aims/aims_svc.h"
#include "transport/aimsi_transport.h"

/* Reachability of a joined registry (reach.c): logs the first failure (ERROR,
 * with URL and cause) and the recovery (INFO); describes the state for error
 * messages. */
typedef struct aimsi_reach {
    pthread_mutex_t lock;
    char what[64];
    char url[AIMSI_URL_MAX + 1];
    int failing, ever_ok;
    time_t since_wall;
    uint64_t since_ns, failures;
    char last_err[256];
} aimsi_reach;
void aimsi_reach_init(aimsi_reach *r, const char *what, const char *url);
void aimsi_reach_fini(aimsi_reach *r);
void aimsi_reach_record(aimsi_reach *r, aims_status rc, const char *errmsg);
/* "" while reachable; else "registry URL unreachable since T (...), last error: E". */
size_t aimsi_reach_describe(aimsi_reach *r, char *buf, size_t cap);

#endif /* AIMSI_REACH_H */
