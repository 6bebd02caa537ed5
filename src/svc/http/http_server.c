/*
 * http_server.c -- the aims_http object: an HTTP/1.1 server (libmicrohttpd)
 * in front of one node, routing the Open Inference Protocol, health probes,
 * /metrics and the status page (aims_http.h).
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
 * Threads and the node. MHD runs AIMS_HTTP_THREADS event-loop threads (epoll).
 * A request's body is collected (capped by AIMS_HTTP_MAX_BODY; a bigger
 * Content-Length gets 413 before any body is read), decoded, and handed to
 * the node through aimsi_node_dispatch -- the same entry native frames use --
 * with AIMSI_INLINE_IF_CHEAP_ROW: a model that takes microseconds a row
 * answers on the event-loop thread, anything slower is queued to the node's
 * workers (and batched with other requests, HTTP or native). Per row, not per
 * run: a queued call costs the door ~30 us of CPU more than an inline one (a
 * suspend, two thread hops, a resume), and judged per run the batches of a
 * busy moment kept every later call queued (docs/DOOR_SPEED.md, session 11).
 * While it is queued the connection is
 * suspended (MHD_suspend_connection) so the event loop serves others; the
 * completion (on a node worker) encodes the reply JSON and resumes it. A
 * per-request mutex orders "done" against "suspend", which may happen in
 * either order. `pending` counts dispatched calls; stop waits for it to
 * reach zero before stopping MHD, so no completion touches a freed server.
 *
 * Hostile input. Header block too big: MHD answers 431 (its memory limit).
 * Two Content-Length headers, or Content-Length with Transfer-Encoding (the
 * request-smuggling shapes): 400 and the connection is closed. Bodies are
 * parsed only by cJSON (http_kserve.c). Slow clients hit the idle timeout.
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
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "aimsi_http.h"
#include "../aimsi_life.h"
#include "../authz/aimsi_authz.h"
#include "../transport/aimsi_transport.h"
#include "aims/aims_https.h"

#define AIMSI_MAGIC_HTTP 0x41485454u /* "AHTT" */
#define MAX_VIEWS 64

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

enum route { R_NONE = 0, R_INFER, R_OTHER };

typedef struct hreq {
    aims_http *h;
    struct MHD_Connection *conn;
    int is_post;
    int reject;         /* 400/413 decided before the body (code) */
    aimsi_hbuf body;
    int too_big;
    /* an infer call in flight */
    int dispatched;
    aimsi_kserve_req rq;
    char model[AIMSI_FRAME_MAX_SERVICE + 1];
    char version[AIMSI_FRAME_MAX_SERVICE + 1];
    pthread_mutex_t mu;
    int done, suspended;
    unsigned code;
    int retry_after;
    aimsi_hbuf out;
    long long ihcl;     /* request Inference-Header-Content-Length, -1 if absent */
    size_t out_json;    /* reply: JSON length before binary data, 0 = all JSON */
    char who[256];      /* the client certificate's identity ("" without mTLS) */
    aims_msg msg;       /* last: ~8 KB of tensor slots that need no zeroing */
} hreq;

/* ---- responses ------------------------------------------------------------ */

static unsigned code_of(aims_status st)
{
    switch (st) {
    case AIMS_OK: return 200;
    case AIMS_E_INVAL:
    case AIMS_E_RANGE:
    case AIMS_E_CORRUPT:
    case AIMS_E_UNSUPPORTED: return 400;
    case AIMS_E_NOTFOUND: return 404;
    case AIMS_E_OVERLOADED: return 429;
    case AIMS_E_CLOSED:
    case AIMS_E_STATE: return 503;
    case AIMS_E_TIMEOUT: return 504;
    default: return 500;
    }
}

static void count_code(aims_http *h, unsigned code)
{
    atomic_fetch_add(&h->ctr.requests, 1);
    const unsigned cls = code / 100 < 6 ? code / 100 : 5;
    atomic_fetch_add(&h->ctr.by_class[cls], 1);
}

/* Queue `b` (taken over, also on failure) as the response. */
static enum MHD_Result respond_ext(aims_http *h, struct MHD_Connection *c, unsigned code,
                                   const char *ctype, aimsi_hbuf *b, int retry_after, int close,
                                   size_t json_len)
{
    if (b->failed) {
        aimsi_hbuf_free(b);
        aimsi_kserve_error(b, "out of memory");
        code = 500;
    }
    struct MHD_Response *r = NULL;
    if (b->p == NULL) {
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        r = MHD_create_response_from_buffer_with_free_callback(b->len, b->p, aimsi_free);
        if (r == NULL) {
            aimsi_free(b->p);
        }
    }
    b->p = NULL;
    b->len = b->cap = 0;
    if (r == NULL) {
        return MHD_NO;
    }
    (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (retry_after > 0) {
        char v[16];
        snprintf(v, sizeof(v), "%d", retry_after);
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (close) {
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    if (json_len > 0) {
        char v[24];
        snprintf(v, sizeof(v), "%zu", json_len);
        (void)MHD_add_response_header(r, "Inference-Header-Content-Length", v);
    }
    count_code(h, code);
    const enum MHD_Result ok = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result respond(aims_http *h, struct MHD_Connection *c, unsigned code,
                               const char *ctype, aimsi_hbuf *b, int retry_after, int close)
{
    return respond_ext(h, c, code, ctype, b, retry_after, close, 0);
}

/* The answer of an infer call (JSON, or JSON + binary data). */
static enum MHD_Result respond_infer(hreq *r)
{
    return respond_ext(r->h, r->conn, r->code,
                       r->out_json > 0 ? "application/octet-stream" : "application/json",
                       &r->out, r->retry_after, 0, r->out_json);
}

static enum MHD_Result respond_error(aims_http *h, struct MHD_Connection *c, unsigned code,
                                     const char *text, int close)
{
    aimsi_hbuf b = {0};
    aimsi_kserve_error(&b, text);
    return respond(h, c, code, "application/json", &b, code == 429 ? 1 : 0, close);
}

static enum MHD_Result respond_json(aims_http *h, struct MHD_Connection *c, aimsi_hbuf *b)
{
    return respond(h, c, 200, "application/json", b, 0, 0);
}

/* ---- infer ------------------------------------------------------------------ */

static void infer_done(void *ctx, aims_status st, aims_msg *reply, const char *err)
{
    hreq *r = ctx;
    aims_http *h = r->h;
    if (st == AIMS_OK && reply != NULL) {
        st = aimsi_kserve_encode_reply(&r->out, r->model, r->version, &r->rq, reply,
                                       &r->out_json);
        if (st != AIMS_OK) {
            err = aims_errmsg();
            aimsi_hbuf_free(&r->out);
            r->out_json = 0;
        }
    }
    r->code = code_of(st);
    if (st != AIMS_OK) {
        char text[512];
        snprintf(text, sizeof(text), "%s", err != NULL && err[0] != '\0' ? err
                                                                          : aims_strerror(st));
        aimsi_kserve_error(&r->out, text);
        r->retry_after = st == AIMS_E_OVERLOADED ? 1 : 0;
        atomic_fetch_add(&h->ctr.infer_fail, 1);
    } else {
        atomic_fetch_add(&h->ctr.infer_ok, 1);
    }
    /* Resume outside the lock: once resumed, the event loop may send the reply
     * and free r (on_completed) at once. A suspended connection stays valid
     * until it is resumed, so conn may be used after the unlock. */
    struct MHD_Connection *const conn = r->conn;
    pthread_mutex_lock(&r->mu);
    r->done = 1;
    const int resume = r->suspended;
    r->suspended = 0;
    pthread_mutex_unlock(&r->mu);
    if (resume) {
        MHD_resume_connection(conn);
    }
    atomic_fetch_sub(&h->pending, 1);
}

/* Find the infer service for model m [version v]; fills view. */
static int find_model(aims_http *h, const char *m, const char *v, aimsi_svc_view *out,
                      const char **versions, size_t *n_versions, char *vbuf, size_t vcap)
{
    aimsi_svc_view views[MAX_VIEWS];
    size_t n = aimsi_node_view(h->node, views, MAX_VIEWS);
    n = n < MAX_VIEWS ? n : MAX_VIEWS;
    int found = 0;
    size_t nv = 0, used = 0;
    for (size_t i = 0; i < n; i++) {
        const aimsi_svc_view *s = &views[i];
        if (strcmp(s->kind, "infer") != 0 || strcmp(s->model, m) != 0) {
            continue;
        }
        if (versions != NULL && s->version[0] != '\0' && nv < 16) {
            const size_t l = strlen(s->version) + 1;
            if (used + l <= vcap) {
                memcpy(vbuf + used, s->version, l);
                versions[nv++] = vbuf + used;
                used += l;
            }
        }
        const int match = v != NULL ? strcmp(s->version, v) == 0
                                    : (s->version[0] == '\0' || !found);
        if (match && !(found && v == NULL && s->version[0] != '\0')) {
            *out = *s;
            found = 1;
        }
    }
    if (n_versions != NULL) {
        *n_versions = nv;
    }
    return found;
}

static enum MHD_Result do_infer(hreq *r, const aimsi_svc_view *v)
{
    aims_http *h = r->h;
    aimsi_infer_desc d; /* the inputs of the version serving now (svc_life_desc.c) */
    if (aimsi_life_describe(v->svc, NULL, &d) != AIMS_OK) {
        return respond_error(h, r->conn, 404, "not a model", 0);
    }
    char err[512];
    const size_t json_len = r->ihcl >= 0 ? (size_t)r->ihcl : r->body.len;
    if (aimsi_kserve_decode(r->body.p, r->body.len, json_len, &d, &r->msg, &r->rq, err,
                            sizeof(err)) != AIMS_OK) {
        atomic_fetch_add(&h->ctr.infer_fail, 1);
        return respond_error(h, r->conn, 400, err, 0);
    }
    /* The node's one policy holds at this door too: the caller is "anonymous"
     * unless an "Authorization: Bearer <JWT>" header verifies (then jwt:<sub>
     * with its scopes); without a policy nothing is refused. */
    const char *bearer = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    const char *tok = bearer != NULL && strncasecmp(bearer, "Bearer ", 7) == 0 ? bearer + 7 : NULL;
    aimsi_door *door = NULL;
    char who[AIMSI_CALLER_MAX];
    const char *caller = r->who[0] != '\0' ? r->who : "anonymous";
    const char *door_peer = h->tls_cert != NULL ? "https://" : "http://";
    const aims_status az = aimsi_authz_check(h->node, caller, door_peer, "infer", v->name,
                                             "predict", &r->msg, tok,
                                             tok != NULL ? strlen(tok) : 0, &door, who, err,
                                             sizeof(err));
    if (az != AIMS_OK) {
        atomic_fetch_add(&h->ctr.infer_fail, 1);
        return respond_error(h, r->conn, az == AIMS_E_DENIED ? 403 : 400, err, 0);
    }
    aimsi_authz_done(h->node, door, caller, door_peer, AIMS_OK, "");
    snprintf(r->model, sizeof(r->model), "%s", v->model);
    snprintf(r->version, sizeof(r->version), "%s", v->version);
    const aimsi_dispatch dp = {v->name, "predict", &r->msg,
                               aimsi_now_ns() + (uint64_t)h->timeout_ms * 1000000u,
                               AIMSI_INLINE_IF_CHEAP_ROW, infer_done, r, NULL};
    r->dispatched = 1;
    atomic_fetch_add(&h->pending, 1);
    (void)aimsi_node_dispatch(h->node, &dp);
    pthread_mutex_lock(&r->mu);
    if (!r->done) {
        MHD_suspend_connection(r->conn);
        r->suspended = 1;
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&r->mu);
    return respond_infer(r);
}

/* ---- routing ---------------------------------------------------------------- */

/* Split "/v2/models/M[/versions/V][/tail]"; returns 0 when malformed. */
static int split_model(const char *url, char *m, size_t mcap, char *v, size_t vcap,
                       const char **tail)
{
    const char *p = url + strlen("/v2/models/");
    const char *e = strchr(p, '/');
    const size_t ml = e != NULL ? (size_t)(e - p) : strlen(p);
    if (ml == 0 || ml >= mcap) {
        return 0;
    }
    memcpy(m, p, ml);
    m[ml] = '\0';
    v[0] = '\0';
    p += ml;
    if (strncmp(p, "/versions/", 10) == 0) {
        p += 10;
        e = strchr(p, '/');
        const size_t vl = e != NULL ? (size_t)(e - p) : strlen(p);
        if (vl == 0 || vl >= vcap) {
            return 0;
        }
        memcpy(v, p, vl);
        v[vl] = '\0';
        p += vl;
    }
    *tail = p;
    return 1;
}

static enum MHD_Result route_model(hreq *r, const char *url, int is_get)
{
    aims_http *h = r->h;
    char m[AIMSI_FRAME_MAX_SERVICE + 1], v[AIMSI_FRAME_MAX_SERVICE + 1];
    const char *tail = NULL;
    if (!split_model(url, m, sizeof(m), v, sizeof(v), &tail)) {
        return respond_error(h, r->conn, 404, "no such path", 0);
    }
    aimsi_svc_view view;
    const char *versions[16];
    size_t nv = 0;
    char vbuf[1024];
    /* A version may also live inside the service "m" (svc_life_desc.c): inner. */
    const char *inner = NULL;
    aimsi_infer_desc d;
    if (!find_model(h, m, v[0] ? v : NULL, &view, versions, &nv, vbuf, sizeof(vbuf))) {
        if (v[0] == '\0' || !find_model(h, m, NULL, &view, versions, &nv, vbuf, sizeof(vbuf)) ||
            aimsi_life_describe(view.svc, v, &d) != AIMS_OK) {
            char text[400];
            snprintf(text, sizeof(text), "unknown model \"%s\"%s%s%s", m,
                     v[0] ? " version \"" : "", v, v[0] ? "\"" : "");
            return respond_error(h, r->conn, 404, text, 0);
        }
        inner = v;
    }
    if (strcmp(tail, "/infer") == 0) {
        if (!r->is_post) {
            return respond_error(h, r->conn, 405, "infer takes POST", 0);
        }
        if (inner != NULL) {
            return respond_error(h, r->conn, 404, "this version is served by weight inside the "
                                 "model: infer on /v2/models/{model}/infer", 0);
        }
        return do_infer(r, &view);
    }
    if (!is_get) {
        return respond_error(h, r->conn, 405, "this path takes GET", 0);
    }
    aimsi_hbuf b = {0};
    if (strcmp(tail, "/ready") == 0) {
        if (!view.running) {
            return respond_error(h, r->conn, 503, view.draining ? "model is draining"
                                                                : "model is not started", 0);
        }
        aimsi_hbuf_str(&b, "{\"name\":");
        aimsi_hbuf_json_str(&b, view.model, strlen(view.model));
        aimsi_hbuf_str(&b, ",\"ready\":true}");
        return respond_json(h, r->conn, &b);
    }
    if (tail[0] != '\0') {
        return respond_error(h, r->conn, 404, "no such path", 0);
    }
    if (aimsi_life_describe(view.svc, inner, &d) != AIMS_OK) { /* the version serving now */
        return respond_error(h, r->conn, 404, "not a model", 0);
    }
    char labels[8][AIMSI_LIFE_LABEL];
    nv = aimsi_life_labels(view.svc, versions, nv, sizeof(versions) / sizeof(versions[0]), labels,
                           sizeof(labels) / sizeof(labels[0]));
    aimsi_kserve_model_meta(&b, &view, &d, versions, nv);
    return respond_json(h, r->conn, &b);
}

static enum MHD_Result route(hreq *r, const char *url, const char *method)
{
    aims_http *h = r->h;
    const int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strncmp(url, "/v2/models/", 11) == 0) {
        return route_model(r, url, is_get);
    }
    aimsi_hbuf b = {0};
    if (strcmp(url, "/v2/health/live") == 0 || strcmp(url, "/v2/health/ready") == 0 ||
        strcmp(url, "/v2") == 0 || strcmp(url, "/metrics") == 0 || strcmp(url, "/") == 0) {
        if (!is_get) {
            return respond_error(h, r->conn, 405, "this path takes GET", 0);
        }
    } else {
        return respond_error(h, r->conn, 404, "no such path", 0);
    }
    if (strcmp(url, "/v2/health/live") == 0) {
        aimsi_hbuf_str(&b, "{\"live\":true}");
        return respond_json(h, r->conn, &b);
    }
    if (strcmp(url, "/v2/health/ready") == 0) {
        char why[256];
        if (!aimsi_node_ready(h->node, why, sizeof(why))) {
            return respond_error(h, r->conn, 503, why, 0);
        }
        aimsi_hbuf_str(&b, "{\"ready\":true}");
        return respond_json(h, r->conn, &b);
    }
    if (strcmp(url, "/v2") == 0) {
        aimsi_hbuf_printf(&b, "{\"name\":\"libaims\",\"version\":\"%s\",\"extensions\":[]}",
                          aims_version_string());
        return respond_json(h, r->conn, &b);
    }
    if (strcmp(url, "/metrics") == 0) {
        aimsi_http_metrics(&b, h->node, &h->ctr);
        return respond(h, r->conn, 200, "text/plain; version=0.0.4; charset=utf-8", &b, 0, 0);
    }
    aimsi_http_status_page(&b, h->node);
    return respond(h, r->conn, 200, "text/html; charset=utf-8", &b, 0, 0);
}

/* ---- MHD callbacks ------------------------------------------------------------ */

typedef struct hdr_scan {
    int n_length;
    int has_te;
} hdr_scan;

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    hdr_scan *s = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        s->n_length++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        s->has_te = 1;
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    aims_http *h = cls;
    hreq *r = *con_cls;
    if (r == NULL) {
        /* Zeroed up to the message only (aimsi_msg_init sets its header; its
         * ~8 KB tensor table is written before it is read): one per request. */
        r = aimsi_malloc(sizeof(*r));
        if (r == NULL) {
            return MHD_NO;
        }
        memset(r, 0, offsetof(hreq, msg));
        r->h = h;
        r->conn = conn;
        r->is_post = strcmp(method, "POST") == 0;
        aimsi_msg_init(&r->msg);
        pthread_mutex_init(&r->mu, NULL);
        *con_cls = r;
        r->ihcl = -1;
        const char *ih = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     "Inference-Header-Content-Length");
        if (ih != NULL) {
            char *end = NULL;
            const long long v = strtoll(ih, &end, 10);
            r->ihcl = end != ih && *end == '\0' && v >= 0 ? v : LLONG_MAX;
        }
        if (h->tls_ca != NULL) { /* mutual TLS: no verified client certificate, no service */
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
            aimsi_peer_verdict *pv = ci != NULL ? ci->socket_context : NULL;
            aimsi_peer_verdict once = {0, 0, "", ""};
            if (pv == NULL) {
                pv = &once;
            }
            if (!pv->known) { /* once per connection: the certificate cannot change */
                pv->ok = aimsi_http_peer_identity(conn, h->tls_names, pv->who, sizeof(pv->who),
                                                  pv->why, sizeof(pv->why)) == 0;
                pv->known = 1;
            }
            if (!pv->ok) {
                r->reject = 403;
                return respond_error(h, conn, 403, pv->why, 1);
            }
            snprintf(r->who, sizeof(r->who), "%s", pv->who);
        }
        hdr_scan s = {0, 0};
        (void)MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header, &s);
        if (s.n_length > 1 || (s.n_length > 0 && s.has_te)) {
            r->reject = 400;
        } else {
            const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl != NULL && strtoull(cl, NULL, 10) > (unsigned long long)h->max_body) {
                r->reject = 413;
            }
        }
        if (r->reject != 0) {
            return respond_error(h, conn, r->reject,
                                 r->reject == 413 ? "request body too large"
                                                  : "ambiguous message length (duplicate "
                                                    "Content-Length or Content-Length with "
                                                    "Transfer-Encoding)",
                                 1);
        }
        return MHD_YES;
    }
    if (r->reject != 0) {
        *upload_data_size = 0; /* response already queued; MHD closes after it */
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (r->body.len + *upload_data_size > (size_t)h->max_body) {
            r->too_big = 1;
        } else if (r->is_post) {
            aimsi_hbuf_add(&r->body, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->dispatched) {
        /* resumed after the node answered */
        return respond_infer(r);
    }
    if (r->too_big) {
        return respond_error(h, conn, 413, "request body too large", 1);
    }
    if (r->body.failed) {
        return respond_error(h, conn, 500, "out of memory for the request body", 1);
    }
    return route(r, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    hreq *r = *con_cls;
    if (r == NULL) {
        return;
    }
    aimsi_hbuf_free(&r->body);
    aimsi_hbuf_free(&r->out);
    aimsi_msg_fini(&r->msg);
    pthread_mutex_destroy(&r->mu);
    aimsi_free(r);
    *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    aims_http *h = cls;
    atomic_fetch_add(&h->ctr.open_conns, toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1);
    if (h->tls_ca != NULL) { /* the client certificate's verdict, cached per connection */
        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
            *socket_context = aimsi_calloc(1, sizeof(aimsi_peer_verdict));
        } else {
            aimsi_free(*socket_context);
            *socket_context = NULL;
        }
    }
}

static void on_log(void *cls, const char *fmt, va_list ap)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 0)))
#endif
    ;
static void on_log(void *cls, const char *fmt, va_list ap)
{
    if (aimsi_log_enabled(AIMS_LOG_DEBUG)) {
        char text[256];
        (void)vsnprintf(text, sizeof(text), fmt, ap);
        aimsi_log(AIMS_LOG_DEBUG, "http: %s", text);
    }
}

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
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, h},
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_log, h},
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
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, opts,
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
