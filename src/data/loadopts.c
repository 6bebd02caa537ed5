/*
 * loadopts.c -- loader options: a small bag of integers keyed by AIMS_LOAD_*.
 *
 * The object stores one int64 per identifier in the 100..115 slot range; the
 * defaults, types and bounds come from the single table in core/params.c
 * (aimsi_param_default / aimsi_param_check), so a binding that asks
 * aims_param_info() sees exactly what the setter enforces. Loaders read values
 * through aimsi_loadopt(), which also accepts NULL options (the defaults), so
 * no loader ever has to special-case "no options given".
 */
#include "aimsi_data.h"

enum {
    LOADOPT_FIRST = AIMS_LOAD_DELIMITER,
    LOADOPT_SLOTS = (int)(sizeof(((struct aims_loadopts *)0)->v) / sizeof(int64_t)),
    /* The loader id range of aims_param (aims_core.h). */
    LOADOPT_RANGE_LO = 100,
    LOADOPT_RANGE_HI = 199
};

/* Slot of a parameter, or -1 when it cannot be a loader option. */
static int loadopt_slot(aims_param param)
{
    const int i = (int)param - LOADOPT_FIRST;
    return (i >= 0 && i < LOADOPT_SLOTS) ? i : -1;
}

int64_t aimsi_loadopt(const aims_loadopts *opts, aims_param param)
{
    const int i = loadopt_slot(param);
    if (i < 0) {
        return 0;
    }
    if (!aimsi_obj_ok(opts, AIMSI_MAGIC_LOADOPTS)) {
        return (int64_t)aimsi_param_default(param);
    }
    return opts->v[i];
}

aims_status aims_loadopts_create(aims_loadopts **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    aims_loadopts *opts = aimsi_calloc(1, sizeof *opts);
    if (opts == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_loadopts_create: out of memory");
    }
    aimsi_obj_init(&opts->obj, AIMSI_MAGIC_LOADOPTS);
    for (int i = 0; i < LOADOPT_SLOTS; i++) {
        opts->v[i] = (int64_t)aimsi_param_default((aims_param)(LOADOPT_FIRST + i));
    }
    *out = opts;
    return AIMS_OK;
}

void aims_loadopts_destroy(aims_loadopts *opts)
{
    if (!aimsi_obj_ok(opts, AIMSI_MAGIC_LOADOPTS)) {
        return;
    }
    aimsi_obj_kill(&opts->obj);
    aimsi_free(opts);
}

aims_status aims_loadopts_set_param_i64(aims_loadopts *opts, aims_param param, int64_t value)
{
    if (!aimsi_obj_ok(opts, AIMSI_MAGIC_LOADOPTS)) {
        return AIMSI_MISUSE("opts is not a valid aims_loadopts handle");
    }
    AIMSI_TRY(aimsi_param_check(&opts->obj, param, LOADOPT_RANGE_LO, LOADOPT_RANGE_HI,
                                AIMS_PARAM_TYPE_I64, (double)value));
    const int i = loadopt_slot(param);
    if (i < 0) {
        /* In the loader range and in the table, but beyond the slots: a table
         * row was added without growing struct aims_loadopts. */
        return aimsi_err(&opts->obj, AIMS_E_INTERNAL,
                         "aims_loadopts_set_param_i64: parameter %d has no storage slot", (int)param);
    }
    opts->v[i] = value;
    return AIMS_OK;
}

aims_status aims_loadopts_get_param_i64(const aims_loadopts *opts, aims_param param, int64_t *out_value)
{
    if (!aimsi_obj_ok(opts, AIMSI_MAGIC_LOADOPTS)) {
        return AIMSI_MISUSE("opts is not a valid aims_loadopts handle");
    }
    if (out_value == NULL) {
        return AIMSI_MISUSE("out_value is NULL");
    }
    /* Validate the identifier (and its type) with its own default as the value,
     * which is always within bounds. */
    AIMSI_TRY(aimsi_param_check(NULL, param, LOADOPT_RANGE_LO, LOADOPT_RANGE_HI, AIMS_PARAM_TYPE_I64,
                                aimsi_param_default(param)));
    const int i = loadopt_slot(param);
    if (i < 0) {
        return aimsi_err(NULL, AIMS_E_INTERNAL,
                         "aims_loadopts_get_param_i64: parameter %d has no storage slot", (int)param);
    }
    *out_value = opts->v[i];
    return AIMS_OK;
}

const char *aims_loadopts_errmsg(const aims_loadopts *opts)
{
    return aimsi_obj_errmsg(opts, AIMSI_MAGIC_LOADOPTS);
}
