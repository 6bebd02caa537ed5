/*
 * fuzz_frame.c -- fuzz target for the wire frame decoder (src/codec/frame.c).
 *
 * Peeks and decodes the input as one frame with a 1 MiB raw-payload cap (a
 * hostile size claim must be a clean AIMS_E_RANGE, not a big allocation),
 * touches every decoded tensor's bytes so ASan sees any out-of-bounds
 * borrow, releases the frame and traps if any libaims block is still live.
 */
#include <stddef.h>
#include <stdint.h>

#include "codec/aimsi_frame.h"

#define FUZZ_RAW_CAP ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t total = 0;
    (void)aimsi_frame_peek(data, size, (size_t)1 << 24, &total);
    aimsi_frame f;
    if (aimsi_frame_decode(data, size, FUZZ_RAW_CAP, &f) == AIMS_OK) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < f.n_tensors; i++) {
            const uint8_t *const b = f.tensors[i].data;
            for (size_t k = 0; k < f.tensors[i].bytes; k++) {
                sink = (uint8_t)(sink ^ b[k]);
            }
        }
        for (size_t k = 0; k < f.message_len; k++) {
            sink = (uint8_t)(sink ^ (uint8_t)f.message[k]);
        }
        (void)sink;
        aimsi_frame_release(&f);
    }
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
