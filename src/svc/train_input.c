/*
 * train_input.c -- the rows and spec of a train submit (svc_train.c): "x"
 * (f32 [rows, cols]) or "text" (BYTES, kind=text) and "y" (i32 [rows]),
 * checked for dtype, rank and agreement, and aligned when a decoded frame
 * left them unaligned. The rows may come from another message than the
 * request: a durable job's stored data (src/svc/jobs/, "data" by reference).
 * Rows a durable job takes from the instance's row cache arrive as a checked
 * dataset instead (in->ds, src/svc/jobs/jobs_cache.c): only "spec" is read.
 * Split out of svc_train.c to keep it under 1000 lines.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "aimsi_msg.h"
#include "train_spec.h"

/* A tensor of the request, checked for dtype and rank. */
int aimsi_train_get_tensor(const aims_msg *m, const char *name, aims_dtype dt, size_t ndim,
                           const uint64_t **dims, const void **data, size_t *bytes)
{
    size_t idx = 0;
    aims_dtype t = 0;
    size_t nd = 0;
    if (aims_msg_find(m, name, &idx) != AIMS_OK ||
        aims_msg_get_tensor(m, idx, NULL, &t, &nd, dims, data, bytes) != AIMS_OK) {
        return 0;
    }
    return t == dt && nd == ndim;
}

aims_status aimsi_train_aligned(const void *data, size_t bytes, size_t align, const void **out,
                                void **tmp)
{
    if (((uintptr_t)data % align) == 0) {
        *out = data;
        return AIMS_OK;
    }
    *tmp = aimsi_malloc(bytes);
    if (*tmp == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "submit: no memory to align %zu bytes", bytes);
    }
    memcpy(*tmp, data, bytes);
    *out = *tmp;
    return AIMS_OK;
}

static aims_status read_spec(const aimsi_work *w, submit_in *in)
{
    const uint64_t *ds = NULL;
    const void *spec = NULL;
    size_t bs = 0;
    if (!aimsi_train_get_tensor(w->req, "spec", AIMS_DT_BYTES, 1, &ds, &spec, &bs)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"spec\" (BYTES key=value lines) is "
                                             "missing");
    }
    in->spec = spec;
    in->spec_len = bs;
    return AIMS_OK;
}

aims_status aimsi_train_check_rows(const float *x, const int32_t *y, size_t rows, size_t cols,
                                   int32_t *ymax)
{
    int32_t top = 0;
    for (size_t r = 0; r < rows; r++) {
        if (y[r] < 0) {
            return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"y\" row %zu is %d (labels are >= 0)",
                             r, (int)y[r]);
        }
        top = y[r] > top ? y[r] : top;
    }
    for (size_t i = 0; i < rows * cols; i++) {
        if (!isfinite(x[i])) {
            return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"x\" row %zu column %zu is not finite",
                             i / cols, i % cols);
        }
    }
    *ymax = top;
    return AIMS_OK;
}

aims_status aimsi_train_read_inputs(const aimsi_work *w, const aims_msg *rows, submit_in *in,
                                    void **tx, void **ty)
{
    if (in->ds != NULL) { /* "data" from the row cache: rows checked when they were cached */
        in->rows = aims_dataset_rows(in->ds);
        in->cols = aims_dataset_cols(in->ds);
        return read_spec(w, in);
    }
    const uint64_t *dx = NULL;
    const uint64_t *dy = NULL;
    const void *x = NULL;
    const void *y = NULL;
    size_t bx = 0;
    size_t by = 0;
    const uint64_t *dt = NULL;
    const void *text = NULL;
    uint64_t text_dims[2] = {0, 0};
    size_t bt = 0;
    if (!aimsi_train_get_tensor(rows, "x", AIMS_DT_F32, 2, &dx, &x, &bx) &&
        aimsi_train_get_tensor(rows, "text", AIMS_DT_BYTES, 1, &dt, &text, &bt) && bt > 0) {
        /* kind=text (svc_train_text.c): one document per row of "y" */
        if (!aimsi_train_get_tensor(rows, "y", AIMS_DT_I32, 1, &dy, &y, &by) || dy[0] == 0 ||
            (uint64_t)(size_t)dy[0] != dy[0]) {
            return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"y\" must be i32 [rows], rows >= 1");
        }
        text_dims[0] = dy[0];
        dx = text_dims; /* rows of "y", no columns */
        in->text = text;
        in->text_len = bt;
    } else if (!aimsi_train_get_tensor(rows, "x", AIMS_DT_F32, 2, &dx, &x, &bx) || dx[0] == 0 ||
               dx[1] == 0 || (uint64_t)(size_t)dx[0] != dx[0] ||
               (uint64_t)(size_t)dx[1] != dx[1]) {
        return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"x\" must be f32 [rows, cols], "
                                             "rows, cols >= 1");
    }
    if (!aimsi_train_get_tensor(rows, "y", AIMS_DT_I32, 1, &dy, &y, &by) || dy[0] != dx[0]) {
        return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"y\" must be i32 [rows] with the rows "
                                             "of \"x\" (%llu)", (unsigned long long)dx[0]);
    }
    AIMSI_TRY(read_spec(w, in));
    in->rows = (size_t)dx[0];
    in->cols = (size_t)dx[1];
    const void *ax = NULL;
    const void *ay = NULL;
    AIMSI_TRY(aimsi_train_aligned(x, bx, _Alignof(float), &ax, tx));
    AIMSI_TRY(aimsi_train_aligned(y, by, _Alignof(int32_t), &ay, ty));
    in->x = ax;
    in->y = ay;
    return AIMS_OK;
}
