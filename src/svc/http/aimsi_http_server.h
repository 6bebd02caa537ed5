/*
 * aimsi_http_server.h -- private to http_server.c (the aims_http object:
 * create, parameters, start, stop, TLS) and http_request.c (one request's
 * life: the libmicrohttpd callbacks, routing, responses, infer calls): the
 * object's layout and the callbacks start hands to libmicrohttpd.
 */
#ifndef AIMSI_HTTP_SERVER_H
#define AIMSI_HTTP_SERVER_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

#include "aimsi_http.h"

#define AIMSI_MAGIC_HTTP 0x41485454u /* "AHTT" */

struct aims_http {
    aimsi_obj obj;
    aims_node *node;
    char listen[128];
    int64_t max_conns, max_body, max_header, idle_s, threads, insecure, timeout_ms;
    struct MHD_Daemon *d;
    char url[96];
    char *tls_cert, *tls_key; /* PEM texts (aims_http_set_tls), NULL: plain HTTP */
    char *tls_ca, *tls_names; /* CA PEM: client certificates required (http_mtls.c) */
    _Atomic int64_t pending;
    aimsi_http_counters ctr;
};

/* The libmicrohttpd callbacks (http_request.c); cls is the aims_http. */
enum MHD_Result aimsi_http_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls);
void aimsi_http_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                             enum MHD_RequestTerminationCode toe);
void aimsi_http_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe);
void aimsi_http_on_log(void *cls, const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 0)))
#endif
    ;

#endif
