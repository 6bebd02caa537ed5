/*
 * fuzz_train_spec.c -- fuzz target for the train service's "spec" parser
 * (src/svc/train_spec.c over the codec's key=value reader, src/codec/kv.c).
 *
 * The input is the spec bytes of a train submit, straight from the network.
 * The parser must answer with a status (never a crash, never a read past the
 * input, which is an exact-size heap block under the replay driver), leave no
 * libaims block live, and on success hand back a spec whose counts stay within
 * the bounds the train service relies on.
 */
#include <stddef.h>
#include <stdint.h>

#include "svc/train_spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    train_spec sp;
    if (aimsi_train_spec_parse((const char *)data, size, &sp) == AIMS_OK) {
        if (sp.n_hidden > TRAIN_MAX_HIDDEN || sp.n_params > TRAIN_MAX_PARAMS ||
            sp.classes > TRAIN_MAX_UNITS || sp.kind < AIMS_MODEL_KIND_LINEAR ||
            sp.kind > AIMS_MODEL_KIND_TEXT) {
            __builtin_trap();
        }
        for (size_t i = 0; i < sp.n_hidden; i++) {
            if (sp.hidden[i] < 1 || sp.hidden[i] > TRAIN_MAX_UNITS) {
                __builtin_trap();
            }
        }
    }
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
