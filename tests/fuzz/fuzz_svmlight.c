/*
 * fuzz_svmlight.c -- fuzz target for the svmlight loader.
 *
 * The first input byte chooses the options:
 *   bit 0     zero_based
 *   bit 1     label kind (0 class ids, 1 float targets)
 *   bits 2-3  num_features: 0 (infer), 4, 1000, 2^32-1
 *   bit 4     max_rows 2 (else all)
 * The rest is the file. A successful load must pass the dataset invariant
 * check; every input must leave no libaims allocation behind.
 */
#include <stddef.h>
#include <stdint.h>

#include "data/aimsi_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t widths[4] = {0, 4, 1000, 4294967295LL};
    if (size == 0) {
        return 0;
    }
    const uint8_t b = data[0];
    aims_loadopts *o = NULL;
    if (aims_loadopts_create(&o) != AIMS_OK) {
        return 0;
    }
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_ZERO_BASED, b & 1u);
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_LABEL_KIND, (b >> 1) & 1u);
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_NUM_FEATURES, widths[(b >> 2) & 3u]);
    (void)aims_loadopts_set_param_i64(o, AIMS_LOAD_MAX_ROWS, ((b >> 4) & 1u) ? 2 : 0);
    aims_dataset *ds = NULL;
    if (aims_dataset_parse(AIMS_FORMAT_SVMLIGHT, data + 1, size - 1, o, &ds) == AIMS_OK) {
        if (aimsi_dataset_check(ds) != AIMS_OK || ds->rows == 0) {
            __builtin_trap();
        }
        volatile float sink = 0.0f;
        for (uint64_t i = ds->tok_off[0]; i < ds->tok_off[ds->rows]; i++) {
            sink += ds->tok_w[i] + (float)ds->tok_ids[i];
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
