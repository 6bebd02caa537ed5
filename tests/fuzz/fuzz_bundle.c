/*
 * fuzz_bundle.c -- fuzz target for the bundle loader (src/model/bundle.c).
 *
 * Parses the input as a saved bundle. When that succeeds, the bundle is made
 * to predict on a tiny fixed input -- dense rows (the model's width without a
 * pipeline; a pipeline's input width is not exposed, so a few small widths
 * are tried) and three short documents -- because a loader that accepts
 * inconsistent parts would only crash at predict time. Traps if any libaims
 * block is still live afterwards.
 */
#include <stddef.h>
#include <stdint.h>

#include "aims/aims.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_W = 4096, MAX_OUT = 4096 };

static void exercise_rows(const aims_bundle *b, size_t w, size_t k)
{
    static float x[2 * MAX_W];
    static float out[2 * MAX_OUT];
    if (w == 0 || w > MAX_W || k == 0 || k > MAX_OUT) {
        return;
    }
    for (size_t i = 0; i < 2 * w; i++) {
        x[i] = (float)(i % 5) - 1.5f;
    }
    (void)aims_bundle_predict_rows(b, AIMS_OUT_SCORES, x, 2, w, out, 2 * k);
    (void)aims_bundle_predict_rows(b, AIMS_OUT_PROBA, x, 1, w, out, k);
}

static void exercise(const aims_bundle *b)
{
    const aims_model *m = aims_bundle_model(b);
    const size_t k = aims_model_output_dim(m);
    if (aims_bundle_pipeline(b) == NULL) {
        exercise_rows(b, aims_model_input_dim(m), k);
        return;
    }
    for (size_t w = 1; w <= 16; w++) {
        exercise_rows(b, w, k);
    }
    if (k > 0 && k <= MAX_OUT) {
        static float out[3 * MAX_OUT];
        const char *const docs[] = {"Hello hello world", "", "caf\xC3\xA9 \xFF ok ok"};
        (void)aims_bundle_predict_texts(b, AIMS_OUT_SCORES, docs, NULL, 3, out, 3 * k);
    }
    (void)aims_bundle_meta(b, "name");
    (void)aims_bundle_meta(b, "library_version");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aims_bundle *b = NULL;
    if (aims_bundle_parse(data, size, &b) == AIMS_OK) {
        exercise(b);
        aims_bundle_destroy(b);
    }
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
