/*
 * svc_pre.c -- the built-in preprocess service kind (aims_service_add_preprocess).
 *
 * "transform": "x" f32 [rows, cols] -> "x" f32 [rows, out_cols], through
 * aims_pipeline_transform_rows of a fitted numeric pipeline (borrowed).
 *
 * The kind does not batch (batching = 0): a transform is a cheap pass over
 * the rows with no fixed per-call cost worth sharing, so joining requests
 * would only add a copy. It may run inline on the caller's thread. The
 * reply tensor is allocated in the reply message and the pipeline writes
 * straight into it: apart from that one allocation (and whatever ONEHOT
 * steps need) a call allocates nothing. Input that arrived unaligned (a
 * tensor borrowed from a decoded frame) is first copied into an aligned
 * buffer, because the pipeline reads it as floats.
 *
 * The pipeline is const after fit and safe for concurrent transforms, so
 * the impl holds no lock: it is just the borrowed pointer.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_svckind.h"

typedef struct pre_impl {
    const aims_pipeline *p;
    size_t out_cols;
} pre_impl;

static aims_status transform_one(const pre_impl *pi, aimsi_work *w)
{
    size_t idx = 0;
    if (aims_msg_find(w->req, "x", &idx) != AIMS_OK) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "transform: the request has no \"x\" tensor "
                                         "(f32 [rows, cols])");
    }
    aims_dtype dt = 0;
    size_t ndim = 0;
    const uint64_t *dims = NULL;
    const void *data = NULL;
    size_t bytes = 0;
    (void)aims_msg_get_tensor(w->req, idx, NULL, &dt, &ndim, &dims, &data, &bytes);
    if (dt != AIMS_DT_F32 || ndim != 2 || dims[0] == 0 || dims[1] == 0 ||
        (uint64_t)(size_t)dims[0] != dims[0] || (uint64_t)(size_t)dims[1] != dims[1]) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "transform: \"x\" must be f32 [rows, cols] with "
                                         "rows, cols >= 1");
    }
    const size_t rows = (size_t)dims[0];
    const size_t cols = (size_t)dims[1];
    size_t cells = 0;
    size_t want = 0;
    if (aimsi_mul_ok(rows, cols, &cells) != 0 || aimsi_mul_ok(cells, sizeof(float), &want) != 0 ||
        want != bytes) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "transform: \"x\" holds %zu bytes, not rows x cols "
                                         "floats", bytes);
    }
    size_t out_n = 0;
    if (aimsi_mul_ok(rows, pi->out_cols, &out_n) != 0) {
        return aimsi_work_fail(w, AIMS_E_RANGE, "transform: %zu rows x %zu output columns overflow",
                        rows, pi->out_cols);
    }
    float *copy = NULL;
    const float *x = data;
    if (((uintptr_t)data % _Alignof(float)) != 0) {
        copy = aimsi_malloc(bytes);
        if (copy == NULL) {
            return aimsi_work_fail(w, AIMS_E_NOMEM, "transform: no memory to align %zu bytes", bytes);
        }
        memcpy(copy, data, bytes);
        x = copy;
    }
    aims_msg_clear(w->reply);
    const uint64_t odims[2] = {rows, pi->out_cols};
    void *out = NULL;
    aims_status st = aims_msg_alloc(w->reply, "x", AIMS_DT_F32, odims, 2, &out);
    if (st == AIMS_OK) {
        st = aims_pipeline_transform_rows(pi->p, x, rows, cols, out, out_n);
    }
    aimsi_free(copy);
    if (st != AIMS_OK) {
        return aimsi_work_fail(w, st, "transform: %s", aims_errmsg());
    }
    return AIMS_OK;
}

static void pre_run(void *impl, aimsi_work *const *items, size_t n)
{
    const pre_impl *pi = impl;
    for (size_t i = 0; i < n; i++) {
        aimsi_work *w = items[i];
        if (w->method == NULL || strcmp(w->method, "transform") != 0) {
            w->status = aimsi_work_fail(w, AIMS_E_NOTFOUND, "no method %s on preprocess service",
                                 w->method != NULL ? w->method : "(null)");
        } else if (w->deadline_ns != 0 && aimsi_now_ns() >= w->deadline_ns) {
            w->status = aimsi_work_fail(w, AIMS_E_TIMEOUT, "transform: the deadline passed before "
                                                    "the call started");
        } else {
            w->status = transform_one(pi, w);
        }
    }
}

static void pre_destroy(void *impl)
{
    aimsi_free(impl);
}

const aimsi_svc_kind aimsi_kind_preprocess = {
    .name = "preprocess",
    .batching = 0,
    .never_inline = 0,
    .run = pre_run,
    .stop = NULL,
    .destroy = pre_destroy,
};

aims_status aimsi_preprocess_create(const aims_pipeline *p, void **out)
{
    if (p == NULL || out == NULL) {
        return AIMSI_MISUSE("NULL pipeline or out");
    }
    if (!aims_pipeline_is_fitted(p)) {
        return aimsi_err(NULL, AIMS_E_STATE, "preprocess: the pipeline is not fitted");
    }
    size_t oc = 0;
    AIMSI_TRY(aims_pipeline_output_cols(p, &oc));
    const aims_step_kind first = aims_pipeline_step_kind(p, 0);
    if (first >= AIMS_STEP_KIND_NORMALIZE) {
        return aimsi_err(NULL, AIMS_E_INVAL, "preprocess: a text pipeline cannot transform "
                                             "\"x\" rows (numeric pipelines only)");
    }
    pre_impl *pi = aimsi_calloc(1, sizeof *pi);
    if (pi == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "preprocess: no memory for the service");
    }
    pi->p = p;
    pi->out_cols = oc;
    *out = pi;
    return AIMS_OK;
}

aims_status aims_service_add_preprocess(aims_node *n, const char *name, const aims_pipeline *p,
                                        aims_service **out)
{
    if (n == NULL || name == NULL || out == NULL) {
        return AIMSI_MISUSE("NULL node, name or out");
    }
    void *impl = NULL;
    AIMSI_TRY(aimsi_preprocess_create(p, &impl));
    return aimsi_service_add(n, name, &aimsi_kind_preprocess, impl, out);
}
