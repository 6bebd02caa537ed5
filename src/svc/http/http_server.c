/*
 * http_server.c -- the aims_http object: an HTTP/1.1 server (libmicrohttpd)
 * in front of one node, routing the Open Inference Protocol, health probes,
 * /metrics and the status page (aims_http.h). This file holds the object:
 * create, parameters, listen address, start, stop, TLS; what happens to one
 * request (the callbacks, routing, infer calls) is http_request.c;
 * aimsi_http_server.h is their shared layout.
 *
 * Why libmicrohttpd. The issue asked to choose between it and libh2o by
 * measurement; libh2o's embedding API (its own event loop, sockets, memory
 * pools and a multi-thread model we would have to rebuild around the node's
 * workers) was more than the time box allowed to wire up, so it was not
 * measured; libmicrohttpd is small, widely deployed, packaged by Debian,
 * parses HTTP/1.1 strictly (keep-alive, pipelining, chunked uploads) and has
 * the limits we need built in (connection cap, per-connection memory = header
 * size cap, idle timeout). docs/HTTP.md says more.
 *
 * HTTPS (aims_https.h). aims_http_set_tls copies the PEM texts of a TLS
 * config's certificate chain and key (read from its files) and start hands
 * them to MHD (MHD_USE_TLS: GnuTLS inside libmicrohttpd, TLS 1.3 only); the
 * key copy is wiped when replaced or freed. With TLS the door may listen on
 * a non-loopback address without AIMS_HTTP_INSECURE. When the config also
 * has a CA and allowed peer names (it requires named peers, as tls:// does
 * with them), the door asks for client certificates (MHD_OPTION_HTTPS_MEM_TRUST)
 * and refuses, with 403 before routing, any request whose connection has no
 * certificate verifying against it or lacking the config's allowed peer names
 * (http_mtls.c); the certificate's name is the caller the policy judges.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <sys/socket.h>

#include "aimsi_http_server.h"
#include "../transport/aimsi_transport.h"
#include "aims/aims_https.h"

/* Where each AIMS_HTTP_* parameter lives (core/params.c does the typed access). */
#define HTTP_FIELD(p, m) {p, AIMSI_FIELD_I64, offsetof(struct aims_http, m)}
static const aimsi_param_field k_http_fields[] = {
    HTTP_FIELD(AIMS_HTTP_MAX_CONNECTIONS, max_conns), HTTP_FIELD(AIMS_HTTP_MAX_BODY, max_body),
    HTTP_FIELD(AIMS_HTTP_MAX_HEADER, max_header), HTTP_FIELD(AIMS_HTTP_IDLE_TIMEOUT_S, idle_s),
    HTTP_FIELD(AIMS_HTTP_THREADS, threads),       HTTP_FIELD(AIMS_HTTP_INSECURE, insecure),
    HTTP_FIELD(AIMS_HTTP_TIMEOUT_MS, timeout_ms),
};
#undef HTTP_FIELD
static const aimsi_param_map k_http_map = {AIMS_HTTP_MAX_CONNECTIONS, AIMS_HTTP_TIMEOUT_MS,
                                           k_http_fields,
                                           sizeof k_http_fields / sizeof k_http_fields[0]};

/* ---- the public object ------------------------------------------------------- */

aims_status aims_http_create(aims_node *node, aims_http **out)
{
    if (!aimsi_obj_ok(node, AIMSI_MAGIC_NODE) || out == NULL) {
        return AIMSI_MISUSE("a node and out are required");
    }
    aims_http *h = aimsi_calloc(1, sizeof(*h));
    if (h == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "http: out of memory");
    }
    aimsi_obj_init(&h->obj, AIMSI_MAGIC_HTTP);
    h->node = node;
    snprintf(h->listen, sizeof(h->listen), "127.0.0.1:0");
    aimsi_param_set_defaults(&k_http_map, h);
    *out = h;
    return AIMS_OK;
}

aims_status aims_http_set_param_i64(aims_http *h, aims_param param, int64_t value)
{
    if (!aimsi_obj_ok(h, AIMSI_MAGIC_HTTP)) {
        return AIMSI_MISUSE("http");
    }
    if (h->d != NULL) {
        return aimsi_err(&h->obj, AIMS_E_STATE, "http: parameters are set before start");
    }
    const aimsi_param_field *f = NULL;
    AIMSI_TRY(aimsi_param_field_of(&h->obj, &k_http_map, param, AIMS_PARAM_TYPE_I64,
                                   (double)value, &f));
    aimsi_param_store(h, f, value, 0.0);
    return AIMS_OK;
}

aims_status aims_http_set_listen(aims_http *h, const char *addr)
{
    if (!aimsi_obj_ok(h, AIMSI_MAGIC_HTTP) || addr == NULL) {
        return AIMSI_MISUSE("http and addr are required");
    }
    if (h->d != NULL) {
        return aimsi_err(&h->obj, AIMS_E_STATE, "http: the address is set before start");
    }
    if (strlen(addr) >= sizeof(h->listen) || strrchr(addr, ':') == NULL) {
        return aimsi_err(&h->obj, AIMS_E_INVAL, "http: listen address \"%.64s\" is not "
                                                "HOST:PORT", addr);
    }
    snprintf(h->listen, sizeof(h->listen), "%s", addr);
    return AIMS_OK;
}

/* Parse h->listen into ss; sets *loopback. */
static aims_status parse_addr(aims_http *h, struct sockaddr_storage *ss, socklen_t *sl,
                              int *loopback)
{
    char host[128];
    const char *colon = strrchr(h->listen, ':');
    size_t hl = (size_t)(colon - h->listen);
    const char *hp = h->listen;
    if (hl >= 2 && hp[0] == '[' && hp[hl - 1] == ']') {
        hp++;
        hl -= 2;
    }
    memcpy(host, hp, hl);
    host[hl] = '\0';
    char *end = NULL;
    const unsigned long port = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port > 65535) {
        return aimsi_err(&h->obj, AIMS_E_INVAL, "http: bad port in \"%s\"", h->listen);
    }
    if (strcmp(host, "localhost") == 0 || host[0] == '\0') {
        snprintf(host, sizeof(host), "127.0.0.1");
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *sl = sizeof(*a4);
        *loopback = (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *sl = sizeof(*a6);
        *loopback = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
    } else {
        return aimsi_err(&h->obj, AIMS_E_INVAL, "http: host \"%s\" is not an IP address or "
                                                "localhost", host);
    }
    return AIMS_OK;
}

aims_status aims_http_start(aims_http *h)
{
    if (!aimsi_obj_ok(h, AIMSI_MAGIC_HTTP)) {
        return AIMSI_MISUSE("http");
    }
    if (h->d != NULL) {
        return aimsi_err(&h->obj, AIMS_E_STATE, "http: already running on %s", h->url);
    }
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int loopback = 0;
    AIMSI_TRY(parse_addr(h, &ss, &sl, &loopback));
    if (!loopback && !h->insecure && h->tls_cert == NULL) {
        return aimsi_err(&h->obj, AIMS_E_STATE, "http: %s is not a loopback address; serve "
                                                "HTTPS there (aims_http_set_tls) or allow plain "
                                                "HTTP with AIMS_HTTP_INSECURE = 1",
                         h->listen);
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    static char k_tls13[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3"; /* GnuTLS priority string */
    const int tls = h->tls_cert != NULL;
    if (tls) {
        flags |= MHD_USE_TLS;
    }
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)h->max_conns, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)h->idle_s, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)h->max_header, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)aimsi_http_on_completed, h},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)aimsi_http_on_connection, h},
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)aimsi_http_on_log, h},
        {MHD_OPTION_STRICT_FOR_CLIENT, 1, NULL},
        /* MHD stops at the first END: optional items come last, skipped as END */
        {tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, h->tls_cert},
        {tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, h->tls_key},
        {tls ? MHD_OPTION_HTTPS_PRIORITIES : MHD_OPTION_END, 0, k_tls13},
        {tls && h->tls_ca != NULL ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, h->tls_ca},
        {MHD_OPTION_END, 0, NULL},
        {MHD_OPTION_END, 0, NULL}};
    if (h->threads > 1) { /* in the first END slot */
        const size_t at = tls ? (h->tls_ca != NULL ? 12 : 11) : 8;
        opts[at] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)h->threads,
                                           NULL};
    }
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, aimsi_http_on_request, h, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
    if (h->d == NULL) {
        return aimsi_err(&h->obj, AIMS_E_IO, "http: cannot listen on %s (address in use or "
                                             "not local?)", h->listen);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    const unsigned port = info != NULL ? info->port : 0;
    char host[64];
    if (ss.ss_family == AF_INET6) {
        char t[48];
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, t, sizeof(t));
        snprintf(host, sizeof(host), "[%s]", t);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
    }
    snprintf(h->url, sizeof(h->url), "%s://%s:%u", tls ? "https" : "http", host, port);
    aimsi_log(AIMS_LOG_INFO, "http: serving node %s on %s", aimsi_node_name(h->node), h->url);
    return AIMS_OK;
}

void aims_http_stop(aims_http *h)
{
    if (!aimsi_obj_ok(h, AIMSI_MAGIC_HTTP) || h->d == NULL) {
        return;
    }
    /* Calls handed to the node always complete (deadline-bounded); their
     * completions touch h and resume connections MHD must still own. */
    MHD_quiesce_daemon(h->d);
    while (atomic_load(&h->pending) > 0) {
        const struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(h->d);
    h->d = NULL;
    h->url[0] = '\0';
}

/* Drop the PEM copies (the key wiped first). */
static void tls_forget(aims_http *h)
{
    if (h->tls_key != NULL) {
        volatile char *k = h->tls_key; /* not optimised away, unlike a memset before free */
        for (size_t i = 0; k[i] != '\0'; i++) {
            k[i] = '\0';
        }
    }
    aimsi_free(h->tls_key);
    aimsi_free(h->tls_cert);
    aimsi_free(h->tls_ca);
    aimsi_free(h->tls_names);
    h->tls_key = h->tls_cert = h->tls_ca = h->tls_names = NULL;
}

aims_status aims_http_set_tls(aims_http *h, const aims_tls_config *cfg)
{
    if (!aimsi_obj_ok(h, AIMSI_MAGIC_HTTP) || cfg == NULL) {
        return AIMSI_MISUSE("http and a TLS config are required");
    }
    if (h->d != NULL) {
        return aimsi_err(&h->obj, AIMS_E_STATE, "http: TLS is set before start");
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        return aimsi_err(&h->obj, AIMS_E_UNSUPPORTED, "http: this libmicrohttpd was built "
                                                      "without HTTPS (GnuTLS)");
    }
    char *cert = NULL, *key = NULL, *ca = NULL, *names = NULL;
    aims_status rc = aimsi_tls_config_pems(cfg, &cert, &key);
    if (rc == AIMS_OK) {
        rc = aimsi_tls_config_trust(cfg, &ca, &names);
    }
    if (rc == AIMS_OK && (names == NULL || names[0] == '\0')) {
        aimsi_free(ca); /* no named peers required: no client certificates asked */
        aimsi_free(names);
        ca = names = NULL;
    }
    if (rc == AIMS_OK && ca != NULL && !aimsi_http_have_mtls()) {
        rc = aimsi_err(NULL, AIMS_E_UNSUPPORTED, "http: client certificates (a CA in the TLS "
                                                 "config) need GnuTLS; built without it");
    }
    if (rc != AIMS_OK) {
        aimsi_free(cert);
        aimsi_free(key);
        aimsi_free(ca);
        aimsi_free(names);
        return aimsi_err_adopt(&h->obj, rc);
    }
    tls_forget(h);
    h->tls_cert = cert;
    h->tls_key = key;
    h->tls_ca = ca; /* NULL: no client certificates asked for */
    h->tls_names = names;
    return AIMS_OK;
}

void aims_http_destroy(aims_http *h)
{
    if (!aimsi_obj_ok(h, AIMSI_MAGIC_HTTP)) {
        return;
    }
    aims_http_stop(h);
    tls_forget(h);
    aimsi_obj_kill(&h->obj);
    aimsi_free(h);
}

aims_status aims_http_url(const aims_http *h, char *buf, size_t cap, size_t *out_len)
{
    if (!aimsi_obj_ok(h, AIMSI_MAGIC_HTTP) || buf == NULL) {
        return AIMSI_MISUSE("http and buf are required");
    }
    if (h->d == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "http: not running");
    }
    const size_t n = strlen(h->url);
    if (n + 1 > cap) {
        return aimsi_err(NULL, AIMS_E_RANGE, "http: url needs %zu bytes", n + 1);
    }
    memcpy(buf, h->url, n + 1);
    if (out_len != NULL) {
        *out_len = n;
    }
    return AIMS_OK;
}

const char *aims_http_errmsg(const aims_http *h)
{
    return aimsi_obj_ok(h, AIMSI_MAGIC_HTTP) ? h->obj.errmsg : "";
}
