/*
 * gen_bundle_corpus.c -- writes the seed corpus of fuzz_bundle (corpus/bundle/).
 *
 * Not built by meson (the corpus is committed). Regenerate after a format change:
 *   cc -std=c11 -D_GNU_SOURCE -Iinclude -Iinclude/aims -Ibuild/include/aims -Isrc tests/fuzz/gen_bundle_corpus.c \
 *      build/src/libaims_internal.a -lopenblas -lzstd -lm -lpthread -o /tmp/gen
 *   /tmp/gen tests/fuzz/corpus/bundle
 * Seeds: valid bundles (numeric pipeline + MLP, no pipeline, int8 model, text
 * pipeline + softmax) and damaged ones (truncated, flipped header and payload
 * bytes, and a well-formed file whose pipeline and model widths disagree).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/aimsi_model.h"

static void check(aims_status rc, const char *what)
{
    if (rc != AIMS_OK) {
        fprintf(stderr, "gen: %s: %s (%s)\n", what, aims_strerror(rc), aims_errmsg());
        exit(1);
    }
}

static aims_model *model(aims_model_kind kind, size_t in, size_t hidden, size_t out)
{
    aims_model *m = NULL;
    check(aims_model_create(kind, in, out, &m), "model");
    if (hidden > 0) {
        check(aims_model_add_dense(m, hidden, AIMS_ACT_RELU), "dense");
    }
    check(aimsi_model_finalize(m), "finalize");
    for (size_t i = 0; i < m->n_params; i++) {
        m->params[i] = (float)((int)(i * 7919 % 200) - 100) / 128.0f;
    }
    m->trained = 1;
    return m;
}

static aims_pipeline *num_pipe(size_t cols)
{
    float x[16 * 64];
    for (size_t i = 0; i < 16 * cols; i++) {
        x[i] = (float)(i % 11) * 0.5f;
    }
    aims_dataset *ds = NULL;
    aims_pipeline *p = NULL;
    check(aims_dataset_create_dense(16, cols, x, NULL, &ds), "dataset");
    check(aims_pipeline_create(&p), "pipeline");
    check(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL), "add");
    check(aims_pipeline_fit(p, ds), "fit");
    aims_dataset_destroy(ds);
    return p;
}

static void *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(*len);
    if (fread(p, 1, *len, f) != *len) {
        exit(1);
    }
    fclose(f);
    return p;
}

static void put(const char *dir, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void save(const char *dir, const char *name, const aims_pipeline *p, const aims_model *m)
{
    aims_bundle *b = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    check(aims_bundle_create(p, m, &b), "bundle");
    check(aims_bundle_set_meta(b, "name", "seed"), "meta");
    check(aims_bundle_set_meta(b, "classes", "a\nb\nc"), "meta");
    check(aims_bundle_save(b, path), "save");
    aims_bundle_destroy(b);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        return 2;
    }
    const char *dir = argv[1];
    aims_pipeline *p8 = num_pipe(8);
    aims_model *mlp = model(AIMS_MODEL_KIND_MLP, 8, 6, 3);
    save(dir, "mlp_standardize", p8, mlp);
    aims_model *sm = model(AIMS_MODEL_KIND_SOFTMAX, 5, 0, 3);
    save(dir, "softmax_no_pipeline", NULL, sm);

    float x[16 * 8];
    for (size_t i = 0; i < 16 * 8; i++) {
        x[i] = (float)(i % 13) - 6.0f;
    }
    aims_dataset *ds = NULL;
    aims_model *q = NULL;
    check(aims_dataset_create_dense(16, 8, x, NULL, &ds), "dataset");
    check(aims_model_quantize(mlp, ds, &q), "quantize");
    save(dir, "mlp_int8", p8, q);

    aims_pipeline *tp = NULL;
    size_t h = 0;
    const char *const docs[] = {"alpha beta", "beta gamma delta", "gamma"};
    aims_dataset *td = NULL;
    check(aims_pipeline_create(&tp), "pipeline");
    check(aims_pipeline_add(tp, AIMS_STEP_KIND_TOKENIZE, NULL), "add");
    check(aims_pipeline_add(tp, AIMS_STEP_KIND_HASH, &h), "add");
    check(aims_pipeline_set_step_param_i64(tp, h, AIMS_STEP_BUCKETS, 16), "buckets");
    check(aims_dataset_create_texts(3, docs, NULL, NULL, &td), "texts");
    check(aims_pipeline_fit(tp, td), "fit");
    aims_model *tm = model(AIMS_MODEL_KIND_SOFTMAX, 16, 0, 3);
    save(dir, "text_softmax", tp, tm);

    /* damaged copies of the first seed */
    char path[512];
    snprintf(path, sizeof path, "%s/mlp_standardize", dir);
    size_t n = 0;
    unsigned char *bytes = slurp(path, &n);
    put(dir, "bad_truncated", bytes, n / 2);
    bytes[13] ^= 0x40;
    put(dir, "bad_flip_header", bytes, n);
    bytes[13] ^= 0x40;
    bytes[n - 9] ^= 0x01;
    put(dir, "bad_flip_payload", bytes, n);
    free(bytes);

    /* well-formed container, pipeline width 8 but model width 5 */
    aimsi_cwriter *w = NULL;
    unsigned char hdr[12] = {1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    check(aimsi_cw_create(AIMSI_KIND_BUNDLE, 0, &w), "writer");
    check(aimsi_cw_add(w, AIMSI_TAG('B', 'H', 'D', 'R'), hdr, sizeof hdr), "bhdr");
    check(aimsi_cw_add(w, AIMSI_TAG('B', 'M', 'E', 'T'), NULL, 0), "bmet");
    check(aimsi_pipeline_write(p8, w), "pipe");
    check(aimsi_model_write(sm, w), "model");
    void *mm = NULL;
    check(aimsi_cw_finish(w, &mm, &n), "finish");
    put(dir, "bad_width_mismatch", mm, n);
    aimsi_free(mm);
    aimsi_cw_destroy(w);

    aims_dataset_destroy(td);
    aims_dataset_destroy(ds);
    aims_model_destroy(tm);
    aims_model_destroy(q);
    aims_model_destroy(sm);
    aims_model_destroy(mlp);
    aims_pipeline_destroy(tp);
    aims_pipeline_destroy(p8);
    return 0;
}
