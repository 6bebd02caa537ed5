/*
 * fuzz_dataset.h -- the body shared by the dataset-parser fuzz targets.
 *
 * Every input must either load or fail cleanly; either way every block the
 * library allocated must be released again, so a leak on an error path traps
 * even without a leak sanitizer.
 */
#ifndef AIMS_FUZZ_DATASET_H
#define AIMS_FUZZ_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "aims/aims.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline int fuzz_parse_dataset(aims_format format, const uint8_t *data, size_t size)
{
    aims_dataset *ds = NULL;
    if (aims_dataset_parse(format, data, size, NULL, &ds) == AIMS_OK) {
        /* touch what a consumer would read */
        volatile size_t sink = aims_dataset_rows(ds) + aims_dataset_cols(ds) +
                               aims_dataset_num_classes(ds) + aims_dataset_token_dim(ds);
        size_t len = 0;
        const char *t = aims_dataset_text(ds, 0, &len);
        if (t != NULL && len > 0) {
            sink += (unsigned char)t[len - 1];
        }
        (void)sink;
    }
    aims_dataset_destroy(ds);
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}

#endif
