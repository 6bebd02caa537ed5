/*
 * params.c -- the table behind the parameter enum.
 *
 * One row per aims_param: name (for bindings), type, bounds and default. Objects
 * validate through aimsi_param_check() so bounds live in exactly one place and
 * aims_param_info() tells a binding the same truth the library enforces.
 *
 * Typed storage. An object lists where each of its parameters lives
 * (aimsi_param_map: parameter -> offset and C type of its field) and its
 * set/get_param_i64/_f64 go through aimsi_param_field_of / _store / _get
 * here, instead of each object writing the same four switch statements.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "aimsi_core.h"
/* Public enums whose ranges are parameter bounds (header only: no link-time
 * dependency on the modules that own them). */
#include "aims/aims_orch.h"

typedef struct param_row {
    aims_param id;
    const char *name;
    aims_param_type type;
    double min, max, def;
} param_row;

#define I64 AIMS_PARAM_TYPE_I64
#define F64 AIMS_PARAM_TYPE_F64
#define BIG 9007199254740992.0 /* 2^53: largest exactly representable integer */

static const param_row k_params[] = {
    {AIMS_LOAD_DELIMITER, "delimiter", I64, 1, 255, ','},
    {AIMS_LOAD_HEADER, "header", I64, 0, 2, 0},
    {AIMS_LOAD_LABEL_COLUMN, "label_column", I64, -2, 1 << 20, -1},
    {AIMS_LOAD_LABEL_KIND, "label_kind", I64, 0, 1, 0},
    {AIMS_LOAD_MISSING, "missing", I64, 0, 1, 1},
    {AIMS_LOAD_MAX_ROWS, "max_rows", I64, 0, BIG, 0},
    {AIMS_LOAD_MAX_BYTES, "max_bytes", I64, 1, BIG, 4294967296.0},
    {AIMS_LOAD_NUM_FEATURES, "num_features", I64, 0, 4294967295.0, 0},
    {AIMS_LOAD_MIN_DOCS, "min_docs", I64, 0, 1 << 30, 20},
    {AIMS_LOAD_ZERO_BASED, "zero_based", I64, 0, 1, 0},
    {AIMS_LOAD_SKIP_ROWS, "skip_rows", I64, 0, BIG, 0},
    {AIMS_LOAD_NONFINITE, "allow_nonfinite", I64, 0, 1, 0},

    {AIMS_STEP_COL_BEGIN, "col_begin", I64, 0, BIG, 0},
    {AIMS_STEP_COL_END, "col_end", I64, -1, BIG, -1},
    {AIMS_STEP_LOW, "low", F64, -HUGE_VAL, HUGE_VAL, 0},
    {AIMS_STEP_HIGH, "high", F64, -HUGE_VAL, HUGE_VAL, 1},
    {AIMS_STEP_STRATEGY, "strategy", I64, 0, 2, 0},
    {AIMS_STEP_VALUE, "value", F64, -FLT_MAX, FLT_MAX, 0},
    {AIMS_STEP_FACTOR, "factor", F64, -FLT_MAX, FLT_MAX, 1.0 / 255.0},
    {AIMS_STEP_MAX_CATEGORIES, "max_categories", I64, 1, 1 << 20, 1024},
    {AIMS_STEP_LOWERCASE, "lowercase", I64, 0, 1, 1},
    {AIMS_STEP_MIN_TOKEN_LEN, "min_token_len", I64, 1, 1024, 2},
    {AIMS_STEP_NGRAM_MAX, "ngram_max", I64, 1, 8, 2},
    {AIMS_STEP_BUCKETS, "buckets", I64, 1, 1 << 30, 1 << 18},
    {AIMS_STEP_SIGNED, "signed", I64, 0, 1, 0},
    {AIMS_STEP_SMOOTH_IDF, "smooth_idf", I64, 0, 1, 1},
    {AIMS_STEP_SUBLINEAR_TF, "sublinear_tf", I64, 0, 1, 0},
    {AIMS_STEP_NORM, "norm", I64, 0, 2, 2},
    {AIMS_STEP_NONFINITE, "nonfinite", I64, 0, 1, 0},
    {AIMS_STEP_PUNCT, "punct", I64, 0, 1, 0},

    {AIMS_PIPELINE_THREADS, "threads", I64, 0, 256, 1},

    {AIMS_MODEL_DROPOUT, "dropout", F64, 0, 0.99, 0},
    {AIMS_MODEL_LOSS, "loss", I64, 0, 3, 0},
    {AIMS_MODEL_EMBED_DIM, "embed_dim", I64, 1, 4096, 50},
    {AIMS_MODEL_THREADS, "model_threads", I64, 0, 256, 1},
    {AIMS_MODEL_PRECISION, "precision", I64, 0, 1, 0},
    {AIMS_MODEL_TEXT_LINEAR, "text_linear", I64, 0, 1, 0},

    {AIMS_TRAIN_OPTIMIZER, "optimizer", I64, 0, 2, 0},
    {AIMS_TRAIN_LR, "lr", F64, 0, 1e6, 0.1},
    {AIMS_TRAIN_MOMENTUM, "momentum", F64, 0, 1, 0.9},
    {AIMS_TRAIN_NESTEROV, "nesterov", I64, 0, 1, 0},
    {AIMS_TRAIN_BETA1, "beta1", F64, 0, 1, 0.9},
    {AIMS_TRAIN_BETA2, "beta2", F64, 0, 1, 0.999},
    {AIMS_TRAIN_EPS, "eps", F64, 0, 1, 1e-8},
    {AIMS_TRAIN_WEIGHT_DECAY, "weight_decay", F64, 0, 1e6, 0},
    {AIMS_TRAIN_SCHEDULE, "schedule", I64, 0, 2, 0},
    {AIMS_TRAIN_WARMUP_STEPS, "warmup_steps", I64, 0, BIG, 0},
    {AIMS_TRAIN_STEP_EPOCHS, "step_epochs", I64, 1, 1 << 30, 10},
    {AIMS_TRAIN_GAMMA, "gamma", F64, 0, 1, 0.1},
    {AIMS_TRAIN_BATCH, "batch", I64, 1, 1 << 24, 128},
    {AIMS_TRAIN_EPOCHS, "epochs", I64, 1, 1 << 24, 5},
    {AIMS_TRAIN_SEED, "seed", I64, 0, BIG, 1},
    {AIMS_TRAIN_THREADS, "train_threads", I64, 0, 256, 0},
    {AIMS_TRAIN_VAL_FRACTION, "val_fraction", F64, 0, 0.9, 0},
    {AIMS_TRAIN_PATIENCE, "patience", I64, 0, 1 << 24, 0},
    {AIMS_TRAIN_MIN_DELTA, "min_delta", F64, 0, FLT_MAX, 0},
    {AIMS_TRAIN_METRIC, "metric", I64, 0, 1, 0},
    {AIMS_TRAIN_WARM_START, "warm_start", I64, 0, 1, 0},
    {AIMS_TRAIN_GEMM, "gemm", I64, 0, 1, 0},
    {AIMS_TRAIN_AVERAGE, "average", I64, 0, 1 << 24, 0},

    {AIMS_HEALTH_FAILURES, "failures", I64, 1, 1000000, 5},
    {AIMS_HEALTH_EJECT_MS, "eject_ms", I64, 1, 86400000, 30000},
    {AIMS_HEALTH_MAX_EJECT_MS, "max_eject_ms", I64, 1, 86400000, 300000},
    {AIMS_HEALTH_MAX_EJECTED_PCT, "max_ejected_pct", I64, 0, 100, 10},
    {AIMS_HEALTH_PANIC_PCT, "panic_pct", I64, 0, 100, 50},

    {AIMS_NODE_WORKERS, "workers", I64, 0, 256, 2},
    {AIMS_NODE_MAX_FRAME, "max_frame", I64, 4096, 4294967295.0, 67108864},
    {AIMS_NODE_CONN_INFLIGHT, "conn_inflight", I64, 1, 1 << 20, 256},
    {AIMS_NODE_HEARTBEAT_MS, "heartbeat_ms", I64, 10, 3600000, 1000},
    {AIMS_NODE_INSECURE, "insecure", I64, 0, 1, 0},
    {AIMS_NODE_DRAIN_MS, "drain_ms", I64, 0, 3600000, 5000},
    {AIMS_NODE_DRAIN_GRACE_MS, "drain_grace_ms", I64, 0, 3600000, 0},
    {AIMS_NODE_RX_MIN_RATE, "rx_min_rate", I64, 0, 1e12, 1024},
    {AIMS_NODE_RX_HEADER_MS, "rx_header_ms", I64, 0, 3600000, 2000},
    {AIMS_NODE_RX_BUDGET, "rx_budget", I64, 0, 1e15, 268435456},
    {AIMS_NODE_RX_PAUSE_MS, "rx_pause_ms", I64, 0, 3600000, 5000},

    {AIMS_SERVICE_CONCURRENCY, "concurrency", I64, 0, 4096, 0},
    {AIMS_SERVICE_QUEUE_CAP, "queue_cap", I64, 1, 1 << 24, 1024},
    {AIMS_SERVICE_BATCH_MAX, "batch_max", I64, 1, 1 << 16, 64},
    {AIMS_SERVICE_BATCH_DELAY_US, "batch_delay_us", I64, 0, 10000000, 200},
    {AIMS_SERVICE_INLINE, "inline", I64, 0, 1, 1},
    {AIMS_SERVICE_WEIGHT, "weight", I64, 1, 10000, 100},
    {AIMS_SERVICE_CLIMIT_TOLERANCE_PCT, "climit_tolerance_pct", I64, 0, 100000, 200},
    {AIMS_SERVICE_LIFO, "lifo", I64, 0, 1, 0},

    {AIMS_CLIENT_TIMEOUT_MS, "timeout_ms", I64, 1, 86400000, 10000},
    {AIMS_CLIENT_RETRY_BUDGET, "retry_budget", F64, 0, 10, 0.2},
    {AIMS_CLIENT_RETRY_MIN, "retry_min", I64, 0, 1000000, 10},
    {AIMS_CLIENT_MAX_ATTEMPTS, "max_attempts", I64, 1, 16, 3},
    {AIMS_CLIENT_LB_POLICY, "lb_policy", I64, AIMS_LB_P2C, AIMS_LB_RANDOM, AIMS_LB_P2C},
    {AIMS_CLIENT_MAX_PENDING, "max_pending", I64, 1, 1 << 24, 4096},
    {AIMS_CLIENT_SYNC_MS, "sync_ms", I64, 10, 3600000, 200},
    {AIMS_CLIENT_BACKOFF_MS, "backoff_ms", I64, 1, 60000, 50},
    {AIMS_CLIENT_MAX_FRAME, "client_max_frame", I64, 4096, 4294967295.0, 67108864},
    {AIMS_CLIENT_HEDGE_MS, "hedge_ms", I64, -1, 600000, -1},

    {AIMS_HTTP_MAX_CONNECTIONS, "http_max_connections", I64, 1, 65536, 1024},
    {AIMS_HTTP_MAX_BODY, "http_max_body", I64, 1024, 1 << 30, 16 << 20},
    {AIMS_HTTP_MAX_HEADER, "http_max_header", I64, 4096, 1 << 20, 32768},
    {AIMS_HTTP_IDLE_TIMEOUT_S, "http_idle_timeout_s", I64, 1, 3600, 30},
    {AIMS_HTTP_THREADS, "http_threads", I64, 1, 64, 2},
    {AIMS_HTTP_INSECURE, "http_insecure", I64, 0, 1, 0},
    {AIMS_HTTP_TIMEOUT_MS, "http_timeout_ms", I64, 1, 86400000, 10000},
};

static const param_row *find_row(aims_param id)
{
    for (size_t i = 0; i < sizeof k_params / sizeof k_params[0]; i++) {
        if (k_params[i].id == id) {
            return &k_params[i];
        }
    }
    return NULL;
}

aims_status aims_param_info(aims_param param, aims_param_type *out_type, double *out_min,
                            double *out_max, double *out_def)
{
    const param_row *row = find_row(param);
    if (row == NULL) {
        return aimsi_err(NULL, AIMS_E_NOTFOUND, "aims_param_info: unknown parameter %d",
                         (int)param);
    }
    if (out_type != NULL) {
        *out_type = row->type;
    }
    if (out_min != NULL) {
        *out_min = row->min;
    }
    if (out_max != NULL) {
        *out_max = row->max;
    }
    if (out_def != NULL) {
        *out_def = row->def;
    }
    return AIMS_OK;
}

aims_status aims_param_by_name(const char *name, aims_param *out_param)
{
    if (name == NULL || out_param == NULL) {
        return AIMSI_MISUSE("NULL name or out_param");
    }
    for (size_t i = 0; i < sizeof k_params / sizeof k_params[0]; i++) {
        if (strcmp(k_params[i].name, name) == 0) {
            *out_param = k_params[i].id;
            return AIMS_OK;
        }
    }
    return aimsi_err(NULL, AIMS_E_NOTFOUND, "aims_param_by_name: no parameter named \"%.64s\"",
                     name);
}

const char *aims_param_name(aims_param param)
{
    const param_row *row = find_row(param);
    return row == NULL ? NULL : row->name;
}

double aimsi_param_default(aims_param param)
{
    const param_row *row = find_row(param);
    return row == NULL ? 0.0 : row->def;
}

aims_status aimsi_param_check(aimsi_obj *obj, aims_param param, int range_lo, int range_hi,
                              aims_param_type type, double value)
{
    const param_row *row = find_row(param);
    if (row == NULL || (int)param < range_lo || (int)param > range_hi) {
        return aimsi_err(obj, AIMS_E_UNSUPPORTED, "parameter %d (%s) does not apply here",
                         (int)param, row == NULL ? "unknown" : row->name);
    }
    if (row->type != type) {
        return aimsi_err(obj, AIMS_E_UNSUPPORTED, "parameter %s is %s, not %s", row->name,
                         row->type == I64 ? "an integer" : "a float",
                         type == I64 ? "an integer" : "a float");
    }
    if (!isfinite(value) && !(isinf(value) && (value < 0 ? isinf(row->min) : isinf(row->max)))) {
        /* only a bound that is itself infinite (clip's open side) admits inf */
        return aimsi_err(obj, AIMS_E_RANGE, "parameter %s = %g is not a finite number",
                         row->name, value);
    }
    if (value < row->min || value > row->max) {
        return aimsi_err(obj, AIMS_E_RANGE, "parameter %s = %g is outside [%g, %g]", row->name,
                         value, row->min, row->max);
    }
    return AIMS_OK;
}

/* ---- typed storage through a field map ------------------------------------------ */

aims_status aimsi_param_field_of(aimsi_obj *obj, const aimsi_param_map *map, aims_param param,
                                 aims_param_type type, double value,
                                 const aimsi_param_field **out)
{
    AIMSI_TRY(aimsi_param_check(obj, param, map->lo, map->hi, type, value));
    for (size_t i = 0; i < map->n; i++) {
        if (map->fields[i].param == param) {
            *out = &map->fields[i];
            return AIMS_OK;
        }
    }
    return aimsi_err(obj, AIMS_E_UNSUPPORTED, "parameter %d (%s) has no setting here", (int)param,
                     aims_param_name(param));
}

void aimsi_param_store(void *base, const aimsi_param_field *f, int64_t i, double d)
{
    char *p = (char *)base + f->offset;
    switch (f->ctype) {
    case AIMSI_FIELD_I64:
        memcpy(p, &i, sizeof i);
        break;
    case AIMSI_FIELD_INT: {
        const int v = (int)i;
        memcpy(p, &v, sizeof v);
        break;
    }
    case AIMSI_FIELD_SIZE: {
        const size_t v = (size_t)i;
        memcpy(p, &v, sizeof v);
        break;
    }
    default:
        memcpy(p, &d, sizeof d);
        break;
    }
}

void aimsi_param_load(const void *base, const aimsi_param_field *f, int64_t *i, double *d)
{
    const char *p = (const char *)base + f->offset;
    switch (f->ctype) {
    case AIMSI_FIELD_I64:
        memcpy(i, p, sizeof *i);
        break;
    case AIMSI_FIELD_INT: {
        int v;
        memcpy(&v, p, sizeof v);
        *i = v;
        break;
    }
    case AIMSI_FIELD_SIZE: {
        size_t v;
        memcpy(&v, p, sizeof v);
        *i = (int64_t)v;
        break;
    }
    default:
        memcpy(d, p, sizeof *d);
        break;
    }
}

void aimsi_param_set_defaults(const aimsi_param_map *map, void *base)
{
    for (size_t i = 0; i < map->n; i++) {
        const double d = aimsi_param_default(map->fields[i].param);
        aimsi_param_store(base, &map->fields[i], (int64_t)d, d);
    }
}

aims_status aimsi_param_get(const aimsi_param_map *map, const void *base, aims_param param,
                            aims_param_type type, int64_t *i, double *d)
{
    const aimsi_param_field *f = NULL;
    AIMSI_TRY(aimsi_param_field_of(NULL, map, param, type, aimsi_param_default(param), &f));
    int64_t vi = 0;
    double vd = 0.0;
    aimsi_param_load(base, f, &vi, &vd);
    if (type == AIMS_PARAM_TYPE_I64) {
        *i = vi;
    } else {
        *d = vd;
    }
    return AIMS_OK;
}
