/*
 * http_request.c -- one HTTP request's life on the aims_http door: the
 * libmicrohttpd callbacks, the checks before the body, routing, responses,
 * and infer calls handed to the node (http_server.c has the object).
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
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>

#include "aimsi_http_server.h"
#include "../aimsi_life.h"
#include "../authz/aimsi_authz.h"

#define MAX_VIEWS 64


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

enum MHD_Result aimsi_http_on_request(void *cls, struct MHD_Connection *conn, const char *url,
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

void aimsi_http_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
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

void aimsi_http_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
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

void aimsi_http_on_log(void *cls, const char *fmt, va_list ap)
{
    if (aimsi_log_enabled(AIMS_LOG_DEBUG)) {
        char text[256];
        (void)vsnprintf(text, sizeof(text), fmt, ap);
        aimsi_log(AIMS_LOG_DEBUG, "http: %s", text);
    }
}

