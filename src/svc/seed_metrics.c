/*
 * seed_metrics.c -- the seed article's metrics, measured from our own counters.
 *
 * Load-balance degree (DESIGN.md §6): over the instances of one service in a
 * window, average load / maximum load, with load = utilisation (busy time /
 * window), not request counts -- an instance that got the same number of
 * requests but served them slower is the more loaded one. Busy time is each
 * service's own AIMS_SERVICE_STAT_BUSY_NS, read through the "$stats" method so the
 * instances may live in other processes; the client's registry view says who
 * the instances are. Instances that appear or vanish during the window are
 * left out (their utilisation over the window is unknown).
 */
#include <string.h>
#include <time.h>

#include "../core/aimsi_core.h"
#include "aimsi_msg.h"
#include "aimsi_regsync.h"
#include "transport/aimsi_transport.h"

#define MAX_INSTANCES 256

typedef struct inst_sample {
    char url[AIMSI_URL_MAX + 1];
    int64_t busy0, busy1;
    int ok0, ok1;
} inst_sample;

static aims_status read_busy(aims_client *c, const char *url, const char *service,
                             int64_t *out)
{
    aims_msg req, reply;
    aimsi_msg_init(&req);
    aimsi_msg_init(&reply);
    aims_status rc = aims_client_call_addr(c, url, service, "$stats", &req, &reply, 2000);
    if (rc == AIMS_OK) {
        rc = aimsi_msg_int(&reply, "busy_ns", out);
    }
    aimsi_msg_fini(&req);
    aimsi_msg_fini(&reply);
    return rc;
}

static aims_status lookup(aims_registry *r, const char *service, inst_sample *s, size_t *n)
{
    aims_instance ids[MAX_INSTANCES];
    size_t found = 0;
    AIMSI_TRY(aims_registry_lookup(r, service, ids, MAX_INSTANCES, &found));
    size_t k = 0;
    for (size_t i = 0; i < found; i++) {
        size_t len = 0;
        if (aims_registry_get_address(r, ids[i], s[k].url, sizeof s[k].url, &len) == AIMS_OK) {
            k++;
        }
    }
    *n = k;
    return AIMS_OK;
}

AIMS_API aims_status aims_client_balance_degree(aims_client *c, const char *service,
                                                int64_t window_ms, double *out_degree,
                                                double *out_max_util)
{
    if (!aimsi_obj_ok(c, AIMSI_MAGIC_CLIENT) || service == NULL || out_degree == NULL) {
        return AIMSI_MISUSE("client, service or out_degree is NULL");
    }
    if (window_ms < 1 || window_ms > 600000) {
        return aimsi_err(NULL, AIMS_E_RANGE, "balance degree: window %lld ms not in 1..600000",
                         (long long)window_ms);
    }
    aims_registry *r = aimsi_client_registry(c);
    if (r == NULL) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "balance degree: the client has no registry "
                         "view (aims_client_set_registry or aims_client_join)");
    }
    inst_sample *s = aimsi_calloc(MAX_INSTANCES, sizeof(*s));
    if (s == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "balance degree: out of memory");
    }
    size_t n = 0;
    aims_status rc = lookup(r, service, s, &n);
    if (rc == AIMS_OK && n == 0) {
        rc = aimsi_err(NULL, AIMS_E_NOTFOUND, "balance degree: no live instance of %s", service);
    }
    const uint64_t t0 = aimsi_now_ns();
    for (size_t i = 0; rc == AIMS_OK && i < n; i++) {
        s[i].ok0 = read_busy(c, s[i].url, service, &s[i].busy0) == AIMS_OK;
    }
    if (rc == AIMS_OK) {
        const struct timespec ts = {(time_t)(window_ms / 1000), (long)(window_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    const uint64_t t1 = aimsi_now_ns();
    double sum = 0.0, max = 0.0;
    size_t used = 0;
    for (size_t i = 0; rc == AIMS_OK && i < n; i++) {
        s[i].ok1 = s[i].ok0 && read_busy(c, s[i].url, service, &s[i].busy1) == AIMS_OK;
        if (!s[i].ok1 || s[i].busy1 < s[i].busy0) {
            continue; /* gone, or restarted during the window */
        }
        const double u = (double)(s[i].busy1 - s[i].busy0) / (double)(t1 - t0);
        sum += u;
        max = u > max ? u : max;
        used++;
    }
    aimsi_free(s);
    if (rc != AIMS_OK) {
        return rc;
    }
    if (used == 0) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "balance degree: no instance of %s answered "
                         "$stats twice", service);
    }
    *out_degree = max > 0.0 ? (sum / (double)used) / max : 0.0;
    if (out_max_util != NULL) {
        *out_max_util = max;
    }
    return AIMS_OK;
}
