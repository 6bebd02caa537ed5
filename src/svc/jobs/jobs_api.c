/*
 * jobs_api.c -- aims_service_set_store (aims_jobs.h): give a train service a
 * store for durable jobs. The instance id every job record shows as its owner
 * is "<host>/<pid>/<service>/<random>": unique per service object, readable
 * in status replies and logs.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "aims/aims_jobs.h"
#include "../aimsi_svckind.h"
#include "aimsi_jobs.h"

aims_status aims_service_set_store(aims_service *s, const char *store)
{
    if (s == NULL || store == NULL) {
        return AIMSI_MISUSE("NULL service or store");
    }
    void *impl = aimsi_service_impl(s, &aimsi_kind_train);
    if (impl == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_service_set_store: %s is not a train service",
                         aimsi_service_name(s));
    }
    char host[64] = "host";
    (void)gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    char rnd[AIMSI_SECRET_HEX + 1];
    AIMSI_TRY(aimsi_secret_hex(rnd));
    char instance[96];
    snprintf(instance, sizeof instance, "%s/%ld/%s/%.6s", host, (long)getpid(),
             aimsi_service_name(s), rnd);
    return aimsi_train_set_store(impl, store, instance);
}
