/*
 * fuzz_csv.c -- fuzz target for the CSV loader (aims_dataset_parse, CSV).
 *
 * The first input byte chooses the options, so option combinations are
 * fuzzed along with the bytes:
 *   bits 0-1  delimiter: ',' ';' TAB ' '
 *   bits 2-3  header 0 / 1 / 2, or (3) header 0 with skip_rows 1
 *   bits 4-5  label column: none, last, 0, 1
 *   bit  6    label kind (0 class ids, 1 float targets)
 *   bit  7    missing policy (1 NaN, 0 error) and max_rows 3 when clear
 * The rest is the file. A successful load must pass the dataset invariant
 * check; every input must leave no libaims allocation behind.
 */
#include <stddef.h>
#include <stdint.h>

#include "data/aimsi_data.h"

static void set_options(aims_loadopts *o, uint8_t b)
{
    static const int64_t delims[4] = {',', ';', '\t', ' '};
    static const int64_t labels[4] = {-1, -2, 0, 1};
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_DELIMITER, delims[b & 3u]);
    const unsigned h = (b >> 2) & 3u;
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_HEADER, h == 3 ? 0 : (int64_t)h);
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_SKIP_ROWS, h == 3 ? 1 : 0);
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_LABEL_COLUMN, labels[(b >> 4) & 3u]);
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_LABEL_KIND, (b >> 6) & 1u);
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_MISSING, (b >> 7) & 1u);
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_MAX_ROWS, ((b >> 7) & 1u) ? 0 : 3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    aims_loadopts *o = NULL;
    if (aims_loadopts_create(&o) != AIMS_OK) {
        return 0;
    }
    set_options(o, data[0]);
    aims_dataset *ds = NULL;
    if (aims_dataset_parse(AIMS_FORMAT_CSV, data + 1, size - 1, o, &ds) == AIMS_OK) {
        if (aimsi_dataset_check(ds) != AIMS_OK || ds->rows == 0) {
            __builtin_trap();
        }
        /* touch every value so ASan sees the whole array */
        volatile float sink = 0.0f;
        for (size_t i = 0; i < ds->rows * ds->cols; i++) {
            sink += ds->x[i];
        }
        (void)sink;
        aims_dataset_destroy(ds);
    }
    aims_loadopts_destroy(o);
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
