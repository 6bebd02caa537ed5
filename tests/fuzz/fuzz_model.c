/*
 * fuzz_model.c -- fuzz target for the model loader (src/model/model.c).
 *
 * Parses the input as a saved model. When that succeeds the model is used the
 * way a service would use it (predict scores and probabilities on a small
 * fixed input, predict classes, clone), because a loader that accepted an
 * inconsistent structure would only crash at predict time. Traps if any
 * libaims block is still live afterwards.
 */
#include <stddef.h>
#include <stdint.h>

#include "aims/aims.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(const aims_model *m)
{
    const size_t in = aims_model_input_dim(m);
    const size_t out = aims_model_output_dim(m);
    /* widths are capped so the fuzzer explores parsing, not memory limits */
    if (in == 0 || in > 4096 || out == 0 || out > 4096) {
        return;
    }
    static float x[2 * 4096];
    static float y[2 * 4096];
    static int32_t c[2];
    for (size_t i = 0; i < 2 * in; i++) {
        x[i] = (float)(i % 5) * 0.25f - 0.5f;
    }
    (void)aims_model_predict(m, AIMS_OUT_SCORES, x, 2, in, y, 2 * out);
    (void)aims_model_predict(m, AIMS_OUT_PROBA, x, 1, in, y, out);
    (void)aims_model_predict_class(m, x, 2, in, c, 2);
    aims_model *copy = NULL;
    if (aims_model_clone(m, &copy) == AIMS_OK) {
        aims_model_destroy(copy);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aims_model *m = NULL;
    if (aims_model_parse(data, size, &m) == AIMS_OK) {
        exercise(m);
        aims_model_destroy(m);
    }
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
