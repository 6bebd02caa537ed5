/*
 * fuzz_pipeline.c -- fuzz target for the pipeline loader (src/data/pipeline.c).
 *
 * Parses the input as a saved pipeline. When that succeeds the pipeline is
 * exercised on a tiny fixed input (dense rows of its fitted width, or three
 * short documents), because a loader that accepts inconsistent state would
 * show up as a crash only at transform time. Traps if any libaims block is
 * still live afterwards.
 */
#include <stddef.h>
#include <stdint.h>

#include "aims/aims.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise_dense(const aims_pipeline *p, size_t in_w, size_t out_w)
{
    /* widths are capped so the fuzzer explores parsing, not memory limits */
    if (in_w == 0 || in_w > 4096 || out_w > 65536) {
        return;
    }
    static float x[2 * 4096];
    static float out[2 * 65536];
    for (size_t i = 0; i < 2 * in_w; i++) {
        x[i] = (float)(i % 7) - 2.0f;
    }
    (void)aims_pipeline_transform_rows(p, x, 2, in_w, out, 2 * out_w);
}

static void exercise_text(const aims_pipeline *p)
{
    const char *const docs[] = {"Hello hello world", "", "caf\xC3\xA9 \xFF ok ok"};
    aims_dataset *o = NULL;
    if (aims_pipeline_transform_texts(p, docs, NULL, 3, &o) == AIMS_OK) {
        aims_dataset_destroy(o);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aims_pipeline *p = NULL;
    if (aims_pipeline_parse(data, size, &p) == AIMS_OK) {
        size_t out_w = 0;
        if (aims_pipeline_output_cols(p, &out_w) == AIMS_OK) {
            const aims_step_kind k = aims_pipeline_step_kind(p, 0);
            if (k >= AIMS_STEP_KIND_NORMALIZE) {
                exercise_text(p);
            } else {
                /* the input width is not exposed; try the widths a corpus uses */
                for (size_t w = 1; w <= 16; w++) {
                    exercise_dense(p, w, out_w);
                }
            }
        }
        aims_pipeline_destroy(p);
    }
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
