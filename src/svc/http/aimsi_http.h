/*
 * aimsi_http.h -- internals of the HTTP front door (src/svc/http/).
 *
 *   http_server.c   the aims_http object on libmicrohttpd: limits, listen,
 *                   start/stop, TLS (its layout: aimsi_http_server.h)
 *   http_request.c  one request: the MHD callbacks, routing, suspend/resume
 *                   around the node dispatch (aimsi_dispatch.h)
 *   http_kserve.c   Open Inference Protocol JSON: request decoding into an
 *                   aims_msg (cJSON), reply / metadata / error encoding
 *   http_metrics.c  GET /metrics (Prometheus text) and GET / (status page)
 *   http_buf.c      a growable byte buffer (aimsi_malloc) for response bodies
 *
 * Only these files include <microhttpd.h> or <cjson/cJSON.h> (DESIGN.md §1).
 */
#ifndef AIMSI_HTTP_H
#define AIMSI_HTTP_H

#include "aims/aims_http.h"
#include "../aimsi_dispatch.h"

/* ---- growable buffer (http_buf.c) ------------------------------------------ */

typedef struct aimsi_hbuf {
    char *p;     /* aimsi_malloc'd, NUL-terminated while len < cap */
    size_t len;
    size_t cap;
    int failed;  /* an append ran out of memory: contents are truncated */
} aimsi_hbuf;

void aimsi_hbuf_add(aimsi_hbuf *b, const void *data, size_t n);
void aimsi_hbuf_str(aimsi_hbuf *b, const char *s);
void aimsi_hbuf_u64(aimsi_hbuf *b, uint64_t v);
void aimsi_hbuf_printf(aimsi_hbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* A JSON string literal (quotes included) of n bytes of s, escaped. */
void aimsi_hbuf_json_str(aimsi_hbuf *b, const char *s, size_t n);
/* The same for HTML text. */
void aimsi_hbuf_html(aimsi_hbuf *b, const char *s);
void aimsi_hbuf_free(aimsi_hbuf *b);

/* ---- KServe v2 JSON (http_kserve.c) ------------------------------------------ */

/* Largest "id" echoed back. */
#define AIMSI_KSERVE_MAX_ID 256

/* What a decoded infer request asked for besides its tensors. */
typedef struct aimsi_kserve_req {
    char id[AIMSI_KSERVE_MAX_ID + 1];
    int has_id;
    int what;           /* 0 class ids, 1 scores, 2 probabilities (the "output" tensor) */
    int want_y;         /* 1 unless "outputs" was given and omits "y" */
    int binary;         /* reply "y" as raw bytes after the JSON (binary extension) */
} aimsi_kserve_req;

/* Decode a KServe v2 JSON infer request for the infer service described by d
 * into out (cleared first; tensors owned by out): "x" f32 [rows, cols] or
 * "text" BYTES documents joined by '\n', plus the i32 "output" selector.
 * body[0..json_len) is the JSON; body[json_len..len) the binary tensor
 * extension's data (json_len == len without it: the
 * Inference-Header-Content-Length header).
 * Returns AIMS_OK or AIMS_E_INVAL/AIMS_E_RANGE/AIMS_E_NOMEM with a message
 * for the client in err. Never reads past body[len]. */
aims_status aimsi_kserve_decode(const char *body, size_t len, size_t json_len,
                                const aimsi_infer_desc *d, aims_msg *out, aimsi_kserve_req *rq,
                                char *err, size_t err_cap);

/* {"model_name":..., "model_version":..., "id":..., "outputs":[...]} from an
 * infer reply ("y"). With rq->binary the raw f32 bytes follow the JSON and
 * *json_len is the JSON's length (else 0). */
aims_status aimsi_kserve_encode_reply(aimsi_hbuf *b, const char *model, const char *version,
                                      const aimsi_kserve_req *rq, const aims_msg *reply,
                                      size_t *json_len);

/* Model metadata of an infer service. */
void aimsi_kserve_model_meta(aimsi_hbuf *b, const aimsi_svc_view *v, const aimsi_infer_desc *d,
                             const char *const *versions, size_t n_versions);

/* {"error": "..."} */
void aimsi_kserve_error(aimsi_hbuf *b, const char *text);

/* ---- numeric "data" arrays without a cJSON tree (http_numarray.c) ---------- */

#define AIMSI_NUMARRAY_MAX 16    /* lifted arrays per request */
#define AIMSI_NUMARRAY_MIN 256   /* smaller arrays stay in the cJSON tree */

typedef struct aimsi_numarrays {
    size_t n;
    size_t off[AIMSI_NUMARRAY_MAX], len[AIMSI_NUMARRAY_MAX]; /* spans of the body */
    char *skeleton;      /* the body with each span replaced by "\u0001aims:K"; NULL if n == 0 */
    size_t skeleton_len;
} aimsi_numarrays;

/* Find the big numbers-only "data" arrays of body and build the skeleton
 * (free it with aimsi_free). n == 0 when there is nothing to lift. */
aims_status aimsi_numarray_lift(const char *body, size_t len, aimsi_numarrays *out);
/* The span index a placeholder string stands for, or -1. */
int aimsi_numarray_index(const aimsi_numarrays *a, const char *s);
/* Check the JSON array text p[0..len) strictly and call num() per number in
 * order (FP32 values parsed as float when as_f32). NULL, or what is wrong. */
const char *aimsi_numarray_walk(const char *p, size_t len, int max_depth, int as_f32,
                                void (*num)(void *ctx, double v), void *ctx);

/* ---- metrics and status page (http_metrics.c) ------------------------------ */

/* Counters of the front door itself, read by the metrics scrape. */
typedef struct aimsi_http_counters {
    _Atomic uint64_t requests;       /* HTTP requests answered */
    _Atomic uint64_t by_class[6];    /* by status class: index = code / 100 */
    _Atomic uint64_t infer_ok, infer_fail;
    _Atomic int64_t open_conns;
} aimsi_http_counters;

void aimsi_http_metrics(aimsi_hbuf *b, aims_node *n, const aimsi_http_counters *c);
void aimsi_http_status_page(aimsi_hbuf *b, aims_node *n);

/* http_mtls.c: the verdict on a connection's client certificate (GnuTLS).
 * 0 and who = the certificate's identity (first DNS/URI subjectAltName, else
 * CN) when it verifies against the door's CA and carries one of `names`
 * ('\n'-separated; NULL or "": any name); -1 and why otherwise. */
struct MHD_Connection;
int aimsi_http_peer_identity(struct MHD_Connection *conn, const char *names, char *who,
                             size_t cap, char *why, size_t why_cap);
/* A connection's verdict, computed on its first request (socket context). */
typedef struct aimsi_peer_verdict {
    int known, ok;
    char who[256], why[256];
} aimsi_peer_verdict;
/* 1 when built with GnuTLS (client certificates possible), else 0. */
int aimsi_http_have_mtls(void);

#endif /* AIMSI_HTTP_H */
