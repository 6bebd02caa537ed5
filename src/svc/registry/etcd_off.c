/*
 * etcd_off.c -- the etcd backend of a build without libcurl/cJSON
 * (meson -Detcd=disabled, or the libraries were not found): etcd:// URLs are
 * recognised and refused with a status that says why, instead of being
 * mistaken for a transport URL of the registry service.
 */
#include "aimsi_regbk.h"

static int etcd_available(const char **why)
{
    *why = "built without etcd (libaims was configured with -Detcd=disabled or without "
           "libcurl/cJSON)";
    return 0;
}

static const aimsi_regbk k_etcd_off = {
    .struct_size = sizeof(aimsi_regbk),
    .version = AIMSI_REGBK_VERSION,
    .scheme = "etcd",
    .available = etcd_available,
};

const aimsi_regbk *aimsi_regbk_etcd(void)
{
    return &k_etcd_off;
}
