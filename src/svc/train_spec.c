/*
 * train_spec.c -- the "spec" text of a train submit (svc_train.c): one
 * key=value per token, checked key by key (model kind, hidden widths,
 * activation, classes, and every trainer/model parameter through the
 * parameter table), so a bad request is refused before any work with a
 * message naming the key. Split out of svc_train.c to keep it under 1000 lines.
 * The bytes are split by the codec's bounded reader (codec/kv.c); here only
 * meaning is checked. Fuzzed by tests/fuzz/fuzz_train_spec.c.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/aimsi_kv.h"
#include "train_spec.h"

static int parse_i64(const char *s, int64_t *out)
{
    if (*s == '\0') {
        return 0;
    }
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return 0;
    }
    *out = (int64_t)v;
    return 1;
}

static int parse_f64(const char *s, double *out)
{
    if (*s == '\0') {
        return 0;
    }
    char *end = NULL;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v)) {
        return 0;
    }
    *out = v;
    return 1;
}

static aims_status spec_hidden(train_spec *sp, const char *v)
{
    sp->n_hidden = 0;
    const char *p = v;
    for (;;) {
        char *end = NULL;
        errno = 0;
        const long long u = strtoll(p, &end, 10);
        if (end == p || errno != 0 || u < 1 || u > TRAIN_MAX_UNITS ||
            (*end != ',' && *end != '\0')) {
            return SPEC_BAD("hidden=%s: want positive layer widths (<= %d) separated by ','", v,
                            TRAIN_MAX_UNITS);
        }
        if (sp->n_hidden == TRAIN_MAX_HIDDEN) {
            return SPEC_BAD("hidden=%s: at most %d layers", v, TRAIN_MAX_HIDDEN);
        }
        sp->hidden[sp->n_hidden++] = (size_t)u;
        if (*end == '\0') {
            return AIMS_OK;
        }
        p = end + 1;
    }
}

static aims_status spec_kind(train_spec *sp, const char *v)
{
    static const struct {
        const char *name;
        aims_model_kind kind;
    } kinds[] = {{"mlp", AIMS_MODEL_KIND_MLP},
                 {"softmax", AIMS_MODEL_KIND_SOFTMAX},
                 {"logistic", AIMS_MODEL_KIND_LOGISTIC},
                 {"linear", AIMS_MODEL_KIND_LINEAR},
                 {"text", AIMS_MODEL_KIND_TEXT}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(v, kinds[i].name) == 0) {
            sp->kind = kinds[i].kind;
            return AIMS_OK;
        }
    }
    return SPEC_BAD("kind=%s: want one of " SPEC_KINDS, v);
}

static aims_status spec_activation(train_spec *sp, const char *v)
{
    static const char *const names[] = {"none", "relu", "gelu", "tanh", "sigmoid"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(v, names[i]) == 0) {
            sp->act = (aims_activation)i;
            sp->has_act = 1;
            return AIMS_OK;
        }
    }
    return SPEC_BAD("activation=%s: want none, relu, gelu, tanh or sigmoid", v);
}

static aims_status spec_param_kv(train_spec *sp, const char *k, const char *v)
{
    aims_param prm = 0;
    if (strlen(k) >= sizeof sp->params[0].key || aims_param_by_name(k, &prm) != AIMS_OK) {
        return SPEC_BAD("unknown key '%s'", k);
    }
    if (!((prm >= 400 && prm < 500) || (prm >= 500 && prm < 600))) {
        return SPEC_BAD("'%s' is not a model or trainer parameter", k);
    }
    for (size_t i = 0; i < sp->n_params; i++) {
        if (sp->params[i].param == prm) {
            return SPEC_BAD("key '%s' given twice", k);
        }
    }
    if (sp->n_params == TRAIN_MAX_PARAMS) {
        return SPEC_BAD("more than %d parameters", TRAIN_MAX_PARAMS);
    }
    aims_param_type type = 0;
    double lo = 0;
    double hi = 0;
    AIMSI_TRY(aims_param_info(prm, &type, &lo, &hi, NULL));
    spec_param *q = &sp->params[sp->n_params];
    q->param = prm;
    q->type = type;
    snprintf(q->key, sizeof q->key, "%s", k);
    double as_f = 0;
    if (type == AIMS_PARAM_TYPE_I64) {
        if (!parse_i64(v, &q->i)) {
            return SPEC_BAD("%s=%s: not an integer", k, v);
        }
        as_f = (double)q->i;
    } else {
        if (!parse_f64(v, &q->f)) {
            return SPEC_BAD("%s=%s: not a finite number", k, v);
        }
        as_f = q->f;
    }
    if (as_f < lo || as_f > hi) {
        return SPEC_BAD("%s=%s: out of range [%g, %g]", k, v, lo, hi);
    }
    sp->n_params++;
    return AIMS_OK;
}

/* checkpoint_every_steps / checkpoint_every_ms: how often a durable job
 * (docs/JOBS.md) writes a checkpoint; ignored by a service without a store. */
static aims_status spec_ckpt(train_spec *sp, const char *k, const char *v)
{
    int64_t n = 0;
    if (!parse_i64(v, &n) || n < 0 || n > ((int64_t)1 << 40)) {
        return SPEC_BAD("%s=%s: want an integer >= 0", k, v);
    }
    if (strcmp(k, "checkpoint_every_steps") == 0) {
        sp->ckpt_steps = n;
    } else {
        sp->ckpt_ms = n;
    }
    return AIMS_OK;
}

/* One key=value pair; `seen` tracks the structural keys given twice. */
static aims_status spec_pair(train_spec *sp, const char *k, const char *v, unsigned *seen)
{
    static const char *const structural[] = {"kind", "hidden", "activation", "classes",
                                             "checkpoint_every_steps", "checkpoint_every_ms"};
    for (unsigned i = 0; i < 6; i++) {
        if (strcmp(k, structural[i]) != 0) {
            continue;
        }
        if ((*seen & (1u << i)) != 0) {
            return SPEC_BAD("key '%s' given twice", k);
        }
        *seen |= 1u << i;
        switch (i) {
        case 0:
            return spec_kind(sp, v);
        case 1:
            sp->has_hidden = 1;
            return spec_hidden(sp, v);
        case 2:
            return spec_activation(sp, v);
        case 4:
        case 5:
            return spec_ckpt(sp, k, v);
        default: {
            int64_t c = 0;
            if (!parse_i64(v, &c) || c < 1 || c > TRAIN_MAX_UNITS) {
                return SPEC_BAD("classes=%s: want an integer in [1, %d]", v, TRAIN_MAX_UNITS);
            }
            sp->classes = (size_t)c;
            return AIMS_OK;
        }
        }
    }
    return spec_param_kv(sp, k, v);
}

/* Parse the "spec" bytes. The splitting into key=value tokens (separators,
 * '#' comments, bounds) is the codec's (codec/kv.c); this file only gives the
 * keys and values their meaning. Keys and values are copied into bounded
 * stack buffers, so nothing is allocated. */
aims_status aimsi_train_spec_parse(const char *bytes, size_t len, train_spec *sp)
{
    if (len > TRAIN_SPEC_MAX) {
        return SPEC_BAD("%zu bytes (at most %d)", len, TRAIN_SPEC_MAX);
    }
    if (len > 0 && memchr(bytes, '\0', len) != NULL) {
        return SPEC_BAD("contains a NUL byte");
    }
    memset(sp, 0, sizeof *sp);
    sp->act = AIMS_ACT_RELU;
    sp->ckpt_ms = 30000; /* durable jobs: at each epoch end and at least every 30 s */
    unsigned seen = 0;
    aims_status rc = AIMS_OK;
    aimsi_kv r;
    aimsi_kv_init(&r, bytes, len);
    aimsi_kv_pair kv;
    int more = 0;
    while (rc == AIMS_OK && (more = aimsi_kv_next(&r, &kv)) != AIMSI_KV_END) {
        char k[SPEC_KEY_MAX];
        char v[SPEC_VALUE_MAX];
        const int shown = kv.tok_len > 64 ? 64 : (int)kv.tok_len;
        if (more == AIMSI_KV_BAD) {
            rc = SPEC_BAD("'%.*s' is not key=value", shown, kv.tok);
        } else if (!aimsi_kv_copy(kv.key, kv.key_len, k, sizeof k)) {
            rc = SPEC_BAD("key '%.*s': longer than %d bytes", shown, kv.tok, SPEC_KEY_MAX - 1);
        } else if (!aimsi_kv_copy(kv.val, kv.val_len, v, sizeof v)) {
            rc = SPEC_BAD("%s=: value longer than %d bytes", k, SPEC_VALUE_MAX - 1);
        } else {
            rc = spec_pair(sp, k, v, &seen);
        }
    }
    if (rc == AIMS_OK && (seen & 1u) == 0) {
        rc = SPEC_BAD("kind is missing (kind=" SPEC_KINDS ")");
    }
    if (rc == AIMS_OK && sp->kind != AIMS_MODEL_KIND_MLP && (sp->has_hidden || sp->has_act)) {
        rc = SPEC_BAD("hidden and activation apply to kind=mlp only");
    }
    return rc;
}
