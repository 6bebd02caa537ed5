/*
 * train_spec.h -- private to svc_train.c, train_spec.c and train_input.c:
 * the parsed "spec" of a train submit (model kind, layer widths, trainer
 * parameters, checkpoint intervals) and the submit's inputs.
 */
#ifndef AIMSI_TRAIN_SPEC_H
#define AIMSI_TRAIN_SPEC_H

#include "../core/aimsi_core.h"
#include "aims/aims_model.h"
#include "aims/aims_pipeline.h"
#include "aimsi_svckind.h"

#define TRAIN_SPEC_MAX 65536
#define TRAIN_MAX_HIDDEN 16
#define TRAIN_MAX_PARAMS 64
#define TRAIN_MAX_UNITS 1048576

#define SPEC_KINDS "mlp|softmax|logistic|linear|text"
#define SPEC_KEY_MAX 64     /* a key longer than this cannot name a parameter */
#define SPEC_VALUE_MAX 1024 /* hidden=... with 16 widths fits many times over */

#define SPEC_BAD(...) aimsi_err(NULL, AIMS_E_INVAL, "spec: " __VA_ARGS__)

typedef struct spec_param {
    aims_param param;
    aims_param_type type;
    int64_t i;
    double f;
    char key[48];
} spec_param;

typedef struct train_spec {
    aims_model_kind kind;
    size_t hidden[TRAIN_MAX_HIDDEN];
    size_t n_hidden;
    int has_hidden;
    aims_activation act;
    int has_act;
    size_t classes;
    spec_param params[TRAIN_MAX_PARAMS];
    size_t n_params;
    int64_t ckpt_steps; /* checkpoint_every_steps (durable jobs; 0 = each epoch end) */
    int64_t ckpt_ms;    /* checkpoint_every_ms (durable jobs; 0 = off) */
} train_spec;

/* Parse the "spec" bytes: key=value separated by newlines or blanks, '#'
 * starts a comment that runs to the end of the line. AIMS_E_INVAL names the
 * bad key or value. */
aims_status aimsi_train_spec_parse(const char *bytes, size_t len, train_spec *sp);

/* The inputs of a submit (train_input.c), pointing into the request. */
typedef struct submit_in {
    const float *x;
    const int32_t *y;
    size_t rows;
    size_t cols;
    const char *spec;
    size_t spec_len;
    const char *text; /* kind=text: '\n'-separated documents instead of x */
    size_t text_len;
    aims_dataset *ds; /* "data" from the row cache (jobs/aimsi_rowcache.h): checked, no copy */
    int32_t ymax;     /* with ds: its largest label */
} submit_in;

/* A tensor of m called name with dtype dt and ndim dimensions: 1, else 0. */
int aimsi_train_get_tensor(const aims_msg *m, const char *name, aims_dtype dt, size_t ndim,
                           const uint64_t **dims, const void **data, size_t *bytes);
/* Point *out at data when it is aligned to `align`, else at a copy of its
 * bytes in *tmp (aimsi_malloc'd; the caller aimsi_frees it): a decoded frame
 * may leave a tensor unaligned. AIMS_E_NOMEM when the copy fails. */
aims_status aimsi_train_aligned(const void *data, size_t bytes, size_t align, const void **out,
                                void **tmp);
/* Read "x"/"text" and "y" from rows (the request, or a durable job's stored
 * data) and "spec" from w->req into in; unaligned tensors are copied into
 * *tx / *ty (aimsi_free them). AIMS_E_INVAL names what is wrong. */
aims_status aimsi_train_read_inputs(const aimsi_work *w, const aims_msg *rows, submit_in *in,
                                    void **tx, void **ty);
/* The row checks of a submit: labels >= 0 (*ymax = the largest), features
 * finite. AIMS_E_INVAL names the first bad row. */
aims_status aimsi_train_check_rows(const float *x, const int32_t *y, size_t rows, size_t cols,
                                   int32_t *ymax);

/* Dataset, model and trainer of a job from its inputs into j (svc_train.c;
 * p: the service's pipeline or NULL). */
struct train_job;
aims_status aimsi_train_build_job(const aims_pipeline *p, const submit_in *in,
                                  struct train_job *j);

#endif
