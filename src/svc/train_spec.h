/*
 * train_spec.h -- private to svc_train.c and train_spec.c: the parsed "spec"
 * of a train submit (model kind, layer widths, trainer parameters).
 */
#ifndef AIMSI_TRAIN_SPEC_H
#define AIMSI_TRAIN_SPEC_H

#include "../core/aimsi_core.h"
#include "aims/aims_model.h"

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
} train_spec;

/* Parse the "spec" bytes: key=value separated by newlines or blanks, '#'
 * starts a comment that runs to the end of the line. AIMS_E_INVAL names the
 * bad key or value. */
aims_status aimsi_train_spec_parse(const char *bytes, size_t len, train_spec *sp);

#endif
