/*
 * fuzz_text.c -- fuzz target for the "label<TAB>text" parser:
 * aims_dataset_parse(AIMS_FORMAT_TEXT, ...). Every input must either load or
 * fail cleanly; either way every block the library allocated must be released
 * again, so a leak on an error path traps even without a leak sanitizer.
 */
#include "fuzz_dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_parse_dataset(AIMS_FORMAT_TEXT, data, size);
}
