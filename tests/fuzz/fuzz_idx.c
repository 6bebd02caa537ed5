/*
 * fuzz_idx.c -- fuzz target for the IDX image parser:
 * aims_dataset_parse(AIMS_FORMAT_IDX, ...). Every input must either load or
 * fail cleanly; either way every block the library allocated must be released
 * again, so a leak on an error path traps even without a leak sanitizer.
 */
#include <stddef.h>
#include <stdint.h>

#include "aims/aims.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aims_dataset *ds = NULL;
    if (aims_dataset_parse(AIMS_FORMAT_IDX, data, size, NULL, &ds) == AIMS_OK) {
        /* touch what a consumer would read */
        volatile size_t sink = aims_dataset_rows(ds) + aims_dataset_cols(ds) +
                               aims_dataset_num_classes(ds);
        (void)sink;
    }
    aims_dataset_destroy(ds);
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
