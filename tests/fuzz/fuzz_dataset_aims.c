/*
 * fuzz_dataset_aims.c -- fuzz target for the saved-dataset (container) parser:
 * aims_dataset_parse(AIMS_FORMAT_AIMS, ...). Every input must either load or
 * fail cleanly; either way every block the library allocated must be released
 * again, so a leak on an error path traps even without a leak sanitizer.
 */
#include "fuzz_dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_parse_dataset(AIMS_FORMAT_AIMS, data, size);
}
