/*
 * fuzz_container.c -- fuzz target for the container reader (src/codec/container.c).
 *
 * Opens the input as a container of any kind (expect_kind 0), decodes every
 * section the table lists under a 64 MiB cap (so a hostile size claim is a
 * clean AIMS_E_RANGE, not an out-of-memory), destroys the reader, and traps
 * if any libaims block is still live: a parser that leaks on some input is
 * as much a bug as one that crashes. The section tags are read back from the
 * table bytes, which is safe because open succeeded only after validating
 * that the whole table lies inside the input.
 */
#include <stddef.h>
#include <stdint.h>

#include "codec/aimsi_codec.h"

#define FUZZ_SECTION_CAP ((size_t)64 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aimsi_creader *r = NULL;
    if (aimsi_cr_open_mem(data, size, 0, 0, &r) == AIMS_OK) {
        const uint32_t n = aimsi_load_u32le(data + 16);
        for (uint32_t i = 0; i < n; i++) {
            const uint32_t tag = aimsi_load_u32le(data + 24 + 32 * (size_t)i);
            void *out = NULL;
            size_t out_len = 0;
            if (aimsi_cr_section(r, tag, FUZZ_SECTION_CAP, &out, &out_len) == AIMS_OK) {
                aimsi_free(out);
            }
        }
        (void)aimsi_cr_kind(r);
        (void)aimsi_cr_minor(r);
        aimsi_cr_destroy(r);
    }
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
