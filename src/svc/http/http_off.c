/*
 * http_off.c -- the aims_http API of a build without the HTTP front door
 * (meson -Dhttp=disabled, or libmicrohttpd/cJSON missing): every call says so.
 */
#include "aims/aims_http.h"
#include "aims/aims_https.h"
#include "aims/aims_svc.h"
#include "../../core/aimsi_core.h"

static aims_status off(void)
{
    return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                     "libaims was built without HTTP (meson -Dhttp=enabled needs "
                     "libmicrohttpd and cJSON)");
}

aims_status aims_http_create(aims_node *node, aims_http **out)
{
    (void)node;
    (void)out;
    return off();
}

void aims_http_destroy(aims_http *h)
{
    (void)h;
}

aims_status aims_http_set_param_i64(aims_http *h, aims_param param, int64_t value)
{
    (void)h;
    (void)param;
    (void)value;
    return off();
}

aims_status aims_http_set_listen(aims_http *h, const char *addr)
{
    (void)h;
    (void)addr;
    return off();
}

aims_status aims_http_start(aims_http *h)
{
    (void)h;
    return off();
}

void aims_http_stop(aims_http *h)
{
    (void)h;
}

aims_status aims_http_url(const aims_http *h, char *buf, size_t cap, size_t *out_len)
{
    (void)h;
    (void)buf;
    (void)cap;
    (void)out_len;
    return off();
}

const char *aims_http_errmsg(const aims_http *h)
{
    (void)h;
    return "libaims was built without HTTP";
}

aims_status aims_http_set_tls(aims_http *h, const aims_tls_config *cfg)
{
    (void)h;
    (void)cfg;
    return off();
}
