/*
 * svc_optimize.c -- the built-in optimize service kind (aims_service_add_optimize).
 *
 * Why a service: int8 post-training quantization (aims_model_quantize) is a
 * library call; a deployment wants it as a step of the model's life that any
 * client can ask for, with a guard: the quantized model is only handed out
 * (or put into service) when its accuracy on held-out data stays within a
 * bound the caller sets. docs/OPTIMIZE.md has the request and reply tensors.
 *
 * How one "optimize" call runs (never inline: it is seconds of work on big
 * sets, and the I/O thread must stay free):
 *   1. parse the fp32 bundle from the "bundle" bytes; raw "x" rows (and
 *      "calib_x" if given) pass through the bundle's pipeline, once;
 *   2. aims_model_quantize calibrates on calib_x (default: the eval rows);
 *   3. aims_model_evaluate both models on the transformed x with labels y;
 *   4. single-row latency of both bundles (median of up to LAT_ROWS calls of
 *      aims_bundle_predict_rows, pipeline included) and their file sizes;
 *   5. drop = fp32 accuracy - int8 accuracy; drop > max_drop is a refusal
 *      (AIMS_E_RANGE, the numbers in the message, no bundle); otherwise the
 *      int8 bundle's bytes go into the reply and, if "publish" names an infer
 *      service on this node, aims_service_swap_bundle puts it into service.
 *
 * Ownership. A published bundle is borrowed by the infer service for as long
 * as it serves it (aims_service_swap_bundle's contract), so the optimize impl
 * keeps every bundle it published on a list, freed when the node destroys the
 * service (by then no service runs). A host that swaps its own bundle back
 * in leaves ours on the list: bounded by the number of publishes.
 *
 * Authorization: the node's door (authz/authz.c) decides "call
 * <service>/optimize" like any other method before run() sees the request;
 * a request that publishes needs "swap <target>" too (also decided there).
 *
 * Classifiers only (the bound is on accuracy); TEXT models are refused
 * (aims_model_quantize does not support them).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "../model/aimsi_model.h"
#include "aimsi_node.h"
#include "aimsi_svckind.h"
#include "aims/aims_optimize.h"

#define LAT_ROWS 64u
#define NAME_MAX_BYTES 128u

typedef struct pub_node {
    aims_bundle *b;
    struct pub_node *next;
} pub_node;

typedef struct opt_impl {
    aims_node *node;
    pthread_mutex_t mu;
    pub_node *published; /* bundles handed to infer services (mu) */
} opt_impl;

/* One call's inputs and products (all owned, freed by req_fini). */
typedef struct opt_req {
    aims_bundle *b, *qb;
    aims_model *q;
    float *x, *xt, *cx, *cxt;
    int32_t *y;
    size_t rows, cols, crows, tcols;
    double max_drop;
    char publish[NAME_MAX_BYTES + 1];
    char version[NAME_MAX_BYTES + 1];
    void *qbytes;
    size_t qlen;
} opt_req;

static void req_fini(opt_req *r)
{
    aims_bundle_destroy(r->b);
    aims_bundle_destroy(r->qb);
    aims_model_destroy(r->q);
    aimsi_free(r->x);
    aimsi_free(r->xt);
    aimsi_free(r->cx);
    aimsi_free(r->cxt);
    aimsi_free(r->y);
    aimsi_free(r->qbytes);
}

/* Find tensor `name`; 0 = absent. */
static int get(const aims_msg *m, const char *name, aims_dtype *dt, size_t *ndim,
               const uint64_t **dims, const void **data, size_t *bytes)
{
    size_t idx = 0;
    if (aims_msg_find(m, name, &idx) != AIMS_OK) {
        return 0;
    }
    (void)aims_msg_get_tensor(m, idx, NULL, dt, ndim, dims, data, bytes);
    return 1;
}

/* An f32 [rows, cols] tensor copied into aligned memory. */
static aims_status get_rows(aimsi_work *w, const char *name, float **out, size_t *rows,
                            size_t *cols)
{
    aims_dtype dt = 0;
    size_t nd = 0, bytes = 0;
    const uint64_t *dims = NULL;
    const void *data = NULL;
    if (!get(w->req, name, &dt, &nd, &dims, &data, &bytes)) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: the request has no \"%s\" tensor "
                                                "(f32 [rows, cols])", name);
    }
    size_t cells = 0, want = 0;
    if (dt != AIMS_DT_F32 || nd != 2 || dims[0] == 0 || dims[1] == 0 ||
        dims[0] > SIZE_MAX || dims[1] > SIZE_MAX ||
        aimsi_mul_ok((size_t)dims[0], (size_t)dims[1], &cells) != 0 ||
        aimsi_mul_ok(cells, sizeof(float), &want) != 0 || want != bytes) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: \"%s\" must be f32 [rows, cols] with "
                                                "rows, cols >= 1", name);
    }
    *out = aimsi_malloc(bytes);
    if (*out == NULL) {
        return aimsi_work_fail(w, AIMS_E_NOMEM, "optimize: no memory for %zu bytes of \"%s\"",
                               bytes, name);
    }
    memcpy(*out, data, bytes);
    *rows = (size_t)dims[0];
    *cols = (size_t)dims[1];
    return AIMS_OK;
}

/* A short string from a bytes tensor (absent: ""). */
static aims_status get_text(aimsi_work *w, const char *name, char *buf)
{
    aims_dtype dt = 0;
    size_t nd = 0, bytes = 0;
    const uint64_t *dims = NULL;
    const void *data = NULL;
    buf[0] = '\0';
    if (!get(w->req, name, &dt, &nd, &dims, &data, &bytes)) {
        return AIMS_OK;
    }
    if (dt != AIMS_DT_BYTES || bytes == 0 || bytes > NAME_MAX_BYTES ||
        memchr(data, '\0', bytes) != NULL) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: \"%s\" must be 1..%u bytes of text",
                               name, NAME_MAX_BYTES);
    }
    memcpy(buf, data, bytes);
    buf[bytes] = '\0';
    return AIMS_OK;
}

/* Raw rows through the bundle's pipeline (a copy when there is none). */
static aims_status transform(aimsi_work *w, const aims_bundle *b, const char *name,
                             const float *x, size_t rows, size_t cols, float **out, size_t *ocols)
{
    const aims_pipeline *p = aims_bundle_pipeline(b);
    const aims_model *m = aims_bundle_model(b);
    size_t oc = cols;
    if (p != NULL) {
        if (aims_pipeline_output_cols(p, &oc) != AIMS_OK) {
            return aimsi_work_fail(w, AIMS_E_UNSUPPORTED, "optimize: the bundle's pipeline has "
                                                          "no fixed output width");
        }
    } else if (cols != aims_model_input_dim(m)) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: \"%s\" has %zu columns, the model "
                                                "takes %zu", name, cols, aims_model_input_dim(m));
    }
    size_t n = 0, bytes = 0;
    if (aimsi_mul_ok(rows, oc, &n) != 0 || aimsi_mul_ok(n, sizeof(float), &bytes) != 0) {
        return aimsi_work_fail(w, AIMS_E_RANGE, "optimize: %zu rows x %zu columns overflow", rows,
                               oc);
    }
    *out = aimsi_malloc(bytes);
    if (*out == NULL) {
        return aimsi_work_fail(w, AIMS_E_NOMEM, "optimize: no memory for %zu bytes", bytes);
    }
    if (p == NULL) {
        memcpy(*out, x, bytes);
    } else if (aims_pipeline_transform_rows(p, x, rows, cols, *out, n) != AIMS_OK) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: \"%s\" through the bundle's pipeline: "
                                                "%s", name, aims_errmsg());
    }
    *ocols = oc;
    return AIMS_OK;
}

static aims_status parse_req(aimsi_work *w, opt_req *r)
{
    aims_dtype dt = 0;
    size_t nd = 0, bytes = 0;
    const uint64_t *dims = NULL;
    const void *data = NULL;
    if (!get(w->req, "bundle", &dt, &nd, &dims, &data, &bytes) || dt != AIMS_DT_BYTES ||
        bytes == 0) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: the request needs \"bundle\" (bytes: "
                                                "an aims bundle file)");
    }
    if (aims_bundle_parse(data, bytes, &r->b) != AIMS_OK) {
        return aimsi_work_fail(w, AIMS_E_CORRUPT, "optimize: \"bundle\" is not a bundle: %s",
                               aims_errmsg());
    }
    const aims_model *m = aims_bundle_model(r->b);
    if (aims_model_kind_of(m) == AIMS_MODEL_KIND_TEXT || aims_model_is_quantized(m) ||
        !aimsi_model_is_classifier(m)) {
        return aimsi_work_fail(w, AIMS_E_UNSUPPORTED, "optimize: the bundle's model must be a "
                                                      "dense fp32 classifier");
    }
    float md = 0;
    if (!get(w->req, "max_drop", &dt, &nd, &dims, &data, &bytes) || dt != AIMS_DT_F32 ||
        bytes != sizeof(float)) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: the request needs \"max_drop\" (f32 "
                                                "scalar: the accuracy drop allowed, e.g. 0.01)");
    }
    memcpy(&md, data, sizeof(float));
    r->max_drop = (double)md;
    if (!isfinite(r->max_drop)) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: \"max_drop\" must be finite");
    }
    AIMSI_TRY(get_rows(w, "x", &r->x, &r->rows, &r->cols));
    if (!get(w->req, "y", &dt, &nd, &dims, &data, &bytes) || dt != AIMS_DT_I32 || nd != 1 ||
        dims[0] != r->rows || bytes != r->rows * sizeof(int32_t)) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: the request needs \"y\" (i32 [%zu]: "
                                                "one class per row of \"x\")", r->rows);
    }
    r->y = aimsi_malloc(bytes);
    if (r->y == NULL) {
        return aimsi_work_fail(w, AIMS_E_NOMEM, "optimize: no memory for \"y\"");
    }
    memcpy(r->y, data, bytes);
    const size_t k = aims_model_output_dim(m);
    for (size_t i = 0; i < r->rows; i++) {
        if (r->y[i] < 0 || (size_t)r->y[i] >= k) {
            return aimsi_work_fail(w, AIMS_E_INVAL,
                                   "optimize: \"y\"[%zu] = %d is not a class of the model (0..%zu)",
                                   i, (int)r->y[i], k - 1);
        }
    }
    if (get(w->req, "calib_x", &dt, &nd, &dims, &data, &bytes)) {
        size_t ccols = 0;
        AIMSI_TRY(get_rows(w, "calib_x", &r->cx, &r->crows, &ccols));
        if (ccols != r->cols) {
            return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: \"calib_x\" has %zu columns, "
                                                    "\"x\" %zu", ccols, r->cols);
        }
    }
    AIMSI_TRY(get_text(w, "publish", r->publish));
    AIMSI_TRY(get_text(w, "version", r->version));
    AIMSI_TRY(transform(w, r->b, "x", r->x, r->rows, r->cols, &r->xt, &r->tcols));
    if (r->cx != NULL) {
        size_t oc = 0;
        AIMSI_TRY(transform(w, r->b, "calib_x", r->cx, r->crows, r->cols, &r->cxt, &oc));
    }
    return AIMS_OK;
}

static aims_status accuracy(aimsi_work *w, const aims_model *m, const opt_req *r, double *out)
{
    aims_dataset *ds = NULL;
    aims_eval *ev = NULL;
    aims_status rc = aims_dataset_create_dense(r->rows, r->tcols, r->xt, r->y, &ds);
    if (rc == AIMS_OK) {
        rc = aims_model_evaluate(m, ds, &ev);
    }
    if (rc == AIMS_OK) {
        rc = aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, out);
    }
    if (rc != AIMS_OK) {
        rc = aimsi_work_fail(w, rc, "optimize: evaluating on \"x\": %s", aims_errmsg());
    }
    aims_eval_destroy(ev);
    aims_dataset_destroy(ds);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median microseconds of one-row aims_bundle_predict_rows over the first rows of x. */
static aims_status latency_us(aimsi_work *w, const aims_bundle *b, const opt_req *r, double *out)
{
    const size_t k = aims_model_output_dim(aims_bundle_model(b));
    float *o = aimsi_malloc(k * sizeof(float));
    if (o == NULL) {
        return aimsi_work_fail(w, AIMS_E_NOMEM, "optimize: no memory for the latency probe");
    }
    const size_t n = r->rows < LAT_ROWS ? r->rows : LAT_ROWS;
    uint64_t t[LAT_ROWS];
    aims_status rc = aims_bundle_predict_rows(b, AIMS_OUT_SCORES, r->x, 1, r->cols, o, k);
    for (size_t i = 0; rc == AIMS_OK && i < n; i++) {
        const uint64_t t0 = aimsi_now_ns();
        rc = aims_bundle_predict_rows(b, AIMS_OUT_SCORES, r->x + i * r->cols, 1, r->cols, o, k);
        t[i] = aimsi_now_ns() - t0;
    }
    aimsi_free(o);
    if (rc != AIMS_OK) {
        return aimsi_work_fail(w, rc, "optimize: single-row predict: %s", aims_errmsg());
    }
    qsort(t, n, sizeof t[0], cmp_u64);
    *out = (double)t[n / 2] / 1e3;
    return AIMS_OK;
}

static aims_status make_int8(aimsi_work *w, opt_req *r)
{
    aims_dataset *calib = NULL;
    aims_status rc = r->cxt != NULL
                         ? aims_dataset_create_dense(r->crows, r->tcols, r->cxt, NULL, &calib)
                         : aims_dataset_create_dense(r->rows, r->tcols, r->xt, NULL, &calib);
    if (rc == AIMS_OK) {
        rc = aims_model_quantize(aims_bundle_model(r->b), calib, &r->q);
    }
    aims_dataset_destroy(calib);
    if (rc != AIMS_OK) {
        return aimsi_work_fail(w, rc, "optimize: quantizing: %s", aims_errmsg());
    }
    rc = aims_bundle_create(aims_bundle_pipeline(r->b), r->q, &r->qb);
    const char *nm = aims_bundle_meta(r->b, "name");
    const char *ver = aims_bundle_meta(r->b, "version");
    char v[NAME_MAX_BYTES + 8];
    if (r->version[0] != '\0') {
        snprintf(v, sizeof v, "%s", r->version);
    } else {
        snprintf(v, sizeof v, "%s%sint8", ver != NULL ? ver : "", ver != NULL ? "-" : "");
    }
    if (rc == AIMS_OK && nm != NULL) {
        rc = aims_bundle_set_meta(r->qb, "name", nm);
    }
    if (rc == AIMS_OK) {
        rc = aims_bundle_set_meta(r->qb, "version", v);
    }
    if (rc == AIMS_OK) {
        rc = aims_bundle_set_meta(r->qb, "quantized", "int8");
    }
    if (rc == AIMS_OK) {
        rc = aimsi_bundle_to_bytes(r->qb, &r->qbytes, &r->qlen);
    }
    if (rc != AIMS_OK) {
        return aimsi_work_fail(w, rc, "optimize: the int8 bundle: %s", aims_errmsg());
    }
    return AIMS_OK;
}

/* Scores go out as f32 (the wire has no f64); exact counts as i64. */
static aims_status put_f32(aims_msg *m, const char *name, double v)
{
    const float f = (float)v;
    return aims_msg_add(m, name, AIMS_DT_F32, NULL, 0, &f, 0);
}

static aims_status put_i64(aims_msg *m, const char *name, int64_t v)
{
    return aims_msg_add(m, name, AIMS_DT_I64, NULL, 0, &v, 0);
}

/* Hand r->qb to the infer service r->publish on this node (ownership to pi). */
static aims_status publish(opt_impl *pi, aimsi_work *w, opt_req *r)
{
    aims_service *t = aimsi_svc_lookup(pi->node, r->publish);
    if (t == NULL) {
        return aimsi_work_fail(w, AIMS_E_NOTFOUND, "optimize: no service \"%s\" on this node to "
                                                   "publish to", r->publish);
    }
    if (aimsi_service_impl(t, &aimsi_kind_infer) == NULL) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "optimize: \"%s\" is not an infer service",
                               r->publish);
    }
    pub_node *pn = aimsi_calloc(1, sizeof *pn);
    if (pn == NULL) {
        return aimsi_work_fail(w, AIMS_E_NOMEM, "optimize: no memory to publish");
    }
    const aims_status rc = aims_service_swap_bundle(t, r->qb);
    if (rc != AIMS_OK) {
        aimsi_free(pn);
        return aimsi_work_fail(w, rc, "optimize: swapping into \"%s\": %s", r->publish,
                               aims_errmsg());
    }
    pn->b = r->qb;
    r->qb = NULL;
    pthread_mutex_lock(&pi->mu);
    pn->next = pi->published;
    pi->published = pn;
    pthread_mutex_unlock(&pi->mu);
    return AIMS_OK;
}

static aims_status optimize_one(opt_impl *pi, aimsi_work *w)
{
    opt_req r;
    memset(&r, 0, sizeof r);
    double acc32 = 0, acc8 = 0, lat32 = 0, lat8 = 0;
    size_t len32 = 0; /* the fp32 bundle's file size */
    {
        aims_dtype dt = 0;
        size_t nd = 0;
        const uint64_t *dims = NULL;
        const void *data = NULL;
        (void)get(w->req, "bundle", &dt, &nd, &dims, &data, &len32);
    }
    aims_status rc = parse_req(w, &r);
    if (rc == AIMS_OK) {
        rc = make_int8(w, &r);
    }
    if (rc == AIMS_OK) {
        rc = accuracy(w, aims_bundle_model(r.b), &r, &acc32);
    }
    if (rc == AIMS_OK) {
        rc = accuracy(w, r.q, &r, &acc8);
    }
    if (rc == AIMS_OK) {
        rc = latency_us(w, r.b, &r, &lat32);
    }
    if (rc == AIMS_OK) {
        rc = latency_us(w, r.qb, &r, &lat8);
    }
    const double drop = acc32 - acc8;
    if (rc == AIMS_OK && drop > r.max_drop) {
        rc = aimsi_work_fail(w, AIMS_E_RANGE,
                             "optimize: refused: int8 accuracy %.4f vs fp32 %.4f on %zu rows is a "
                             "drop of %.4f, over max_drop %.4f; no bundle returned", acc8, acc32,
                             r.rows, drop, r.max_drop);
    }
    if (rc == AIMS_OK && w->cancel != NULL && atomic_load(w->cancel)) {
        rc = aimsi_work_fail(w, AIMS_E_CANCELLED, "optimize: cancelled");
    }
    if (rc == AIMS_OK) {
        aims_msg_clear(w->reply);
        const uint64_t qn = r.qlen;
        rc = put_f32(w->reply, "fp32_accuracy", acc32);
        rc = rc != AIMS_OK ? rc : put_f32(w->reply, "int8_accuracy", acc8);
        rc = rc != AIMS_OK ? rc : put_f32(w->reply, "drop", drop);
        rc = rc != AIMS_OK ? rc : put_i64(w->reply, "fp32_bytes", (int64_t)len32);
        rc = rc != AIMS_OK ? rc : put_i64(w->reply, "int8_bytes", (int64_t)r.qlen);
        rc = rc != AIMS_OK ? rc : put_f32(w->reply, "fp32_latency_us", lat32);
        rc = rc != AIMS_OK ? rc : put_f32(w->reply, "int8_latency_us", lat8);
        rc = rc != AIMS_OK ? rc : put_i64(w->reply, "rows", (int64_t)r.rows);
        rc = rc != AIMS_OK ? rc : put_i64(w->reply, "fp32_correct",
                                          (int64_t)llround(acc32 * (double)r.rows));
        rc = rc != AIMS_OK ? rc : put_i64(w->reply, "int8_correct",
                                          (int64_t)llround(acc8 * (double)r.rows));
        rc = rc != AIMS_OK ? rc
                           : aims_msg_add(w->reply, "bundle", AIMS_DT_BYTES, &qn, 1, r.qbytes, 0);
        if (rc != AIMS_OK) {
            rc = aimsi_work_fail(w, rc, "optimize: no room for the reply: %s", aims_errmsg());
        }
    }
    if (rc == AIMS_OK && r.publish[0] != '\0') {
        rc = publish(pi, w, &r);
        if (rc == AIMS_OK) {
            rc = put_i64(w->reply, "published", 1);
        }
    }
    req_fini(&r);
    return rc;
}

static void opt_run(void *impl, aimsi_work *const *items, size_t n)
{
    opt_impl *pi = impl;
    for (size_t i = 0; i < n; i++) {
        aimsi_work *w = items[i];
        if (w->method == NULL || strcmp(w->method, "optimize") != 0) {
            w->status = aimsi_work_fail(w, AIMS_E_NOTFOUND, "no method %s on optimize service",
                                        w->method != NULL ? w->method : "(null)");
        } else if (w->deadline_ns != 0 && aimsi_now_ns() >= w->deadline_ns) {
            w->status = aimsi_work_fail(w, AIMS_E_TIMEOUT, "optimize: the deadline passed before "
                                                           "the call started");
        } else {
            w->status = optimize_one(pi, w);
        }
    }
}

static void opt_destroy(void *impl)
{
    opt_impl *pi = impl;
    if (pi == NULL) {
        return;
    }
    for (pub_node *p = pi->published; p != NULL;) {
        pub_node *next = p->next;
        aims_bundle_destroy(p->b);
        aimsi_free(p);
        p = next;
    }
    pthread_mutex_destroy(&pi->mu);
    aimsi_free(pi);
}

static const aimsi_svc_kind aimsi_kind_optimize = {
    .name = "optimize",
    .batching = 0,
    .never_inline = 1,
    .run = opt_run,
    .stop = NULL,
    .destroy = opt_destroy,
};

aims_status aims_service_add_optimize(aims_node *n, const char *name, aims_service **out)
{
    if (n == NULL || name == NULL || out == NULL) {
        return AIMSI_MISUSE("NULL node, name or out");
    }
    opt_impl *pi = aimsi_calloc(1, sizeof *pi);
    if (pi == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "optimize: no memory for the service");
    }
    pi->node = n;
    pthread_mutex_init(&pi->mu, NULL);
    return aimsi_service_add(n, name, &aimsi_kind_optimize, pi, out);
}
