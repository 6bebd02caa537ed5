/*
 * aimsi_model.h -- the model object's layout, shared by the files of src/model.
 *
 * Every model kind is a stack of dense layers, except TEXT, which puts an
 * embedding-bag in front of one dense layer:
 *
 *   LINEAR, SOFTMAX        one dense layer  in -> out, no activation
 *   LOGISTIC               one dense layer  in -> 1
 *   MLP                    hidden dense layers (with activations) + output layer
 *   TEXT                   emb (input_dim x embed_dim) -> mean -> dense embed_dim -> out
 *   TEXT, text_linear = 1  emb (input_dim x out) -> weighted sum -> + b (the dense
 *                          layer is out x out and only its bias is used: keeping
 *                          the one-layer shape keeps file, eval and clone code
 *                          the same; its W stays 0)
 *
 * Dense layer weights: W is out x in, row-major (so a batch forward is
 * Y = X W^T + b, one sgemm with CblasTrans on W); b has `out` entries. All
 * trainable floats of a model live in ONE contiguous block `params` (layer by
 * layer: W then b; TEXT: emb first) so optimizers, checkpoints and clones work on
 * one array, and gradients mirror the same layout.
 *
 * Quantized models (int8) keep, per dense layer, int8 weights qW (out x in),
 * per-output-channel float scales wscale[out], an input activation scale
 * xscale (symmetric, calibrated), and the float bias. `params` stays allocated
 * only for the float bias/embeddings then (see quant.c).
 *
 * Only src/model calls BLAS (blas.c wraps the few routines used).
 */
/*
 * NOTE (helper 'model', Phase 2) -- additions to this header, layout unchanged:
 *   - (handle magics AIMSI_MAGIC_MODEL / _TRAINER / _EVAL live in aimsi_core.h).
 *   - Quantized models: model.c frees and clones, model_file.c (de)serialises
 *     the int8 fields of aimsi_dense (section 'QDNS': per layer xscale, wscale[out], qwsum[out],
 *     qw[out*in]) and keeps `params` in the FULL float layout (W slots may be
 *     zero) so w_off/b_off never change. aimsi_model_forward() calls
 *     aimsi_q8_dense_forward() for every layer of a quantized model; quant.c
 *     provides the fast (VNNI) version; model_predict.c has a weak portable
 *     fallback.
 *   - aimsi_model_scratch_floats() covers 4 * rows * widest-layer floats, which
 *     the int8 path may use as its own scratch (e.g. int8 rows + int32 sums).
 */
#ifndef AIMSI_MODEL_H
#define AIMSI_MODEL_H

#include "../codec/aimsi_codec.h"
#include "../core/aimsi_core.h"
#include "../data/aimsi_data.h"
#include "aims/aims_model.h"

#define AIMSI_MAX_LAYERS 64

typedef struct aimsi_dense {
    size_t in, out;
    aims_activation act;
    size_t w_off; /* offset of W in model->params (floats) */
    size_t b_off; /* offset of b in model->params (floats) */
    /* int8 form (quantized models only) */
    int8_t *qw;     /* out x in */
    float *wscale;  /* out */
    float xscale;   /* input activation scale: x_q = round(x / xscale) */
    int32_t *qwsum; /* out: row sums of qw (for asymmetric-input kernels) */
} aimsi_dense;

struct aims_model {
    aimsi_obj obj;
    aims_model_kind kind;
    size_t input_dim, output_dim;

    size_t n_layers;
    aimsi_dense layers[AIMSI_MAX_LAYERS];

    /* TEXT */
    size_t embed_dim; /* text_linear: output_dim once final */
    size_t emb_off;   /* offset of the embedding table in params */
    int text_linear;  /* AIMS_MODEL_TEXT_LINEAR */

    float *params;
    size_t n_params;
    int trained;
    int quantized;

    /* parameters */
    double dropout;
    int loss; /* resolved at structure time: 1 cross-entropy, 2 MSE, 3 hinge (TEXT) */
    int loss_param;
    int threads;
    int precision;
};

/* Fix the structure (layer shapes, parameter offsets) and allocate params
 * (zeroed). Idempotent once done. */
aims_status aimsi_model_finalize(aims_model *m);
/* Forward pass for dense kinds over `rows` rows into out (rows x output
 * units, raw scores/logits). scratch: caller memory of
 * aimsi_model_scratch_floats(m, rows) floats. No allocation. */
size_t aimsi_model_scratch_floats(const aims_model *m, size_t rows);
void aimsi_model_forward(const aims_model *m, const float *x, size_t rows, float *scratch,
                         float *out);

/* Serialise / deserialise into a container (used by model files, bundles and
 * checkpoints). */
aims_status aimsi_model_write(const aims_model *m, aimsi_cwriter *w);
aims_status aimsi_model_read(aimsi_creader *r, aims_model **out);
/* A trainer checkpoint as bytes in memory / restored from bytes (train_ckpt.c;
 * the same container aims_trainer_checkpoint writes; aimsi_free *out). */
aims_status aimsi_trainer_checkpoint_bytes(const aims_trainer *t, void **out, size_t *out_len);
aims_status aimsi_trainer_restore_bytes(aims_trainer *t, const void *data, size_t len);
/* A snapshot of a begun trainer's checkpoint state (parameters, optimizer
 * buffers, counters), taken between steps by memcpy into a reused buffer, and
 * turned into the very bytes aimsi_trainer_checkpoint_bytes gives for that
 * state later, on any thread, while the trainer goes on (durable jobs write
 * checkpoints off the training thread, src/svc/jobs/jobs_ckpt.c). take: *io
 * NULL creates one, else it is reused (its buffer grows when needed); on
 * failure *io is unchanged and still valid. */
typedef struct aimsi_trainer_snap aimsi_trainer_snap;
aims_status aimsi_trainer_snap_take(const aims_trainer *t, aimsi_trainer_snap **io);
aims_status aimsi_trainer_snap_bytes(const aimsi_trainer_snap *s, void **out, size_t *out_len);
void aimsi_trainer_snap_free(aimsi_trainer_snap *s);
/* A bundle's file bytes in memory (bundle.c; aimsi_free *out). */
aims_status aimsi_bundle_to_bytes(const aims_bundle *b, void **out, size_t *out_len);

/* BLAS boundary (blas.c): C = alpha * op(A) op(B) + beta * C, row-major. */
void aimsi_sgemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                 const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                 size_t ldc);

/* libaims' own GEMM for training (gemm.c): C = op(A) op(B) + beta C,
 * row-major, alpha 1, with fp32 operands (AVX-512 FMA, or AVX2 + FMA:
 * gemm_avx2.c, the same bits) or bf16-rounded ones (AVX512_BF16), fp32
 * sums either way. ws holds at least
 * aimsi_gemm_own_ws_bytes(prec, m, n, k) bytes (the packed operands); the work
 * is spread over pool (NULL: the calling thread) and the result does not
 * depend on its thread count. On a CPU without the instructions
 * (aimsi_gemm_own_available(prec) == 0) the call is aimsi_sgemm. */
enum { AIMSI_GEMM_F32 = 0, AIMSI_GEMM_BF16 = 1 };
int aimsi_gemm_own_available(int prec);
/* The own GEMM's instruction set on this CPU, read once: AVX512 (AVX-512
 * F/BW/VL: the fp32 kernel of gemm.c, bf16 too when the CPU has
 * AVX512_BF16), AVX2 (AVX2 + FMA: gemm_avx2.c's fp32 kernel) or NONE. */
enum { AIMSI_GEMM_ISA_NONE = 0, AIMSI_GEMM_ISA_AVX2 = 1, AIMSI_GEMM_ISA_AVX512 = 2 };
int aimsi_gemm_isa(void);
/* fp32 GEMMs through the AVX2 kernel even on an AVX-512 CPU (1) or by the
 * ISA (0, the default); returns the previous setting. Process-wide; for
 * tests (the same bits either way). */
int aimsi_gemm_avx2_force(int on);
size_t aimsi_gemm_own_ws_bytes(int prec, size_t m, size_t n, size_t k);
void aimsi_gemm_own(aimsi_pool *pool, void *ws, int prec, int trans_a, int trans_b, size_t m,
                    size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                    float beta, float *c, size_t ldc);

/* What the own GEMM does to each finished block of C, while it is still in
 * registers, after C = acc + beta C; in this order, each step optional (a
 * zeroed struct does nothing):
 *   bias  c += bias[j]                      (the forward's bias rows)
 *   relu  c = c > 0 ? c : 0                 (the ReLU pass)
 *   gate  c = gate[i * ldc + j] > 0 ? c : 0 (ReLU backward: gate = the layer's
 *                                            output, laid out like C)
 *   w     SGD with momentum, C holding mu v + grad (train_opt.c's fast path):
 *         wd > 0: c += wd w;  w -= lr c;  c *= mom   (w[i * ldw + j]);
 *         or, adam set, Adam/AdamW with C = the gradient (train_opt.c's
 *         arithmetic; C is left unwritten)
 * Each replaces a separate pass over C with the same operations in the same
 * order (no FMA contraction), so results are bit-identical to those passes;
 * blocks are disjoint, so any thread count gives the same bits. */
typedef struct aimsi_gemm_epi {
    const float *bias;
    int relu;
    const float *gate;
    float *w;
    size_t ldw;
    float lr, mom, wd;
    /* adam != 0: instead of the SGD step, C is the gradient and the step is
     * train_opt.c's Adam (AdamW when adam == 2) on w, v1 = m, v2 = s (all
     * laid out like w); C is then not stored. */
    int adam;
    float *v1, *v2;
    float b1, b2, eps, c1, c2;
    /* wpk (with w): after a block's step, also write its new weights into
     * wpk, the panels the forward GEMM X W^T packs from w (pack_t_f32 /
     * pack_t_bf16 in the GEMM's precision; (ldw-wide rows of) w as B, k =
     * this GEMM's n): panel p, slot s at wpk + (p * ks + s) * 32. The forward
     * then takes them as aimsi_gemm_pre.bpk. Pads are never written (zero
     * them once). */
    uint32_t *wpk;
} aimsi_gemm_epi;
void aimsi_gemm_own_epi(aimsi_pool *pool, void *ws, int prec, int trans_a, int trans_b, size_t m,
                        size_t n, size_t k, const float *a, size_t lda, const float *b,
                        size_t ldb, float beta, float *c, size_t ldc, const aimsi_gemm_epi *epi);
/* Operands of a bf16 own GEMM given already rounded (the trainer's bf16 copy
 * of the batch, train_dense.c), each optional (NULL: round the fp32 operand
 * as usual): a16 replaces A when trans_a = 0, as m rows of (k + 1) / 2 slots
 * (aimsi_bf16_round_row's layout); b16 replaces B when trans_b = 0, as k
 * rows of ldb16 bf16 values. They must hold the roundings of a / b, so the
 * result is bit for bit that of aimsi_gemm_own_epi; the replaced fp32
 * operand is then not read, so pass them only when
 * aimsi_gemm_own_available(AIMSI_GEMM_BF16). Ignored for fp32. */
typedef struct aimsi_gemm_pre {
    const uint32_t *a16;
    const uint16_t *b16;
    size_t ldb16;
    /* bp32 (with b16, trans_b = 0): the same B as (k + 1) / 2 pair rows of
     * ldbp32 slots, slot j of row kp = (b16 row 2kp [j], row 2kp + 1 [j], or
     * 0 past k) -- aimsi_bf16_pair_rows' layout, a panel's rows in place:
     * full panels are read from it, the ragged edge is packed from b16. */
    const uint32_t *bp32;
    size_t ldbp32;
    /* bpk (trans_b = 1, fp32 or bf16): B already in panels, every panel
     * (ceil(n / 32) of them, (k_slots x 32) slots each, columns past n zero),
     * exactly what packing b would make (aimsi_gemm_epi.wpk writes them) */
    const uint32_t *bpk;
} aimsi_gemm_pre;
void aimsi_gemm_own_pre(aimsi_pool *pool, void *ws, int prec, int trans_a, int trans_b, size_t m,
                        size_t n, size_t k, const float *a, size_t lda, const float *b,
                        size_t ldb, float beta, float *c, size_t ldc, const aimsi_gemm_epi *epi,
                        const aimsi_gemm_pre *pre);
/* One row of k floats rounded to bf16 (nearest even, the own GEMM's rounding)
 * as (k + 1) / 2 slots, the odd tail zero; returns 0 (nothing written) on a
 * CPU without AVX512_BF16. */
int aimsi_bf16_round_row(const float *x, size_t k, uint32_t *dst);
/* Two rows in aimsi_bf16_round_row's layout (k values each; r1 NULL: zeros)
 * interleaved into k slots (r0[j], r1[j]): one row of aimsi_gemm_pre.bp32.
 * Returns 0 (nothing written) on a CPU without AVX512_BF16. */
int aimsi_bf16_pair_rows(const uint32_t *r0, const uint32_t *r1, size_t k, uint32_t *dst);
/* Full fp32 panels of a B stored k x n read in place (1, the default) or
 * packed first (0); returns the previous setting. Process-wide; for tests
 * (the same bits either way). */
int aimsi_gemm_direct_b_force(int on);
/* The same epilogue as plain passes over an m x n block of C. */
void aimsi_gemm_epi_apply(const aimsi_gemm_epi *e, size_t m, size_t n, float *c, size_t ldc);

/* Handle magics (AIMSI_MAGIC_MODEL, _TRAINER, _EVAL, _BUNDLE): aimsi_core.h. */

/* One dense layer of a quantized model: y[rows x L->out] = dequant(qW x_q) + b,
 * WITHOUT the activation (the caller applies it). x is rows x L->in floats;
 * scratch has at least 2 * rows * max(L->in, L->out) floats. Pure function of
 * its inputs (many threads at once). quant.c overrides the weak fallback. */
void aimsi_q8_dense_forward(const aims_model *m, const aimsi_dense *L, const float *x,
                            size_t rows, float *scratch, float *y);

/* y[out] = W x + b for one row, on the calling thread (gemv.c; no BLAS
 * threads, no allocation; AVX-512, AVX2+FMA or C, chosen once). */
void aimsi_gemv_bias(const float *w, size_t out, size_t in, const float *x, const float *b,
                     float *y);
/* Force the kernel (1 C, 2 AVX2, 3 AVX-512; 0: the best the CPU has). Returns
 * the kernel in effect, or -1 when the CPU lacks it. Process-wide; tests only. */
int aimsi_gemv_isa_force(int isa);

/* Apply an activation in place over n floats. */
void aimsi_act_apply(aims_activation act, float *v, size_t n);

/* Scores of a model over rows of dense data (eval.c). Rows are idx[0..n) of
 * x (row width m->input_dim), or 0..n-1 when idx is NULL. Classifiers read
 * labels, regression reads targets (output 1) or labels as numbers.
 * confusion: k*k counts or NULL. Allocates its own scratch. */
typedef struct aimsi_score {
    double loss;     /* mean log-loss (classes) or mean squared error */
    double accuracy; /* NaN for regression */
    double r2;       /* NaN for classifiers */
    size_t rows;
} aimsi_score;
aims_status aimsi_model_score(const aims_model *m, const float *x, const int32_t *labels,
                              const float *targets, const size_t *idx, size_t n,
                              int64_t *confusion, aimsi_score *out);
/* Classifier? (LOGISTIC, SOFTMAX, TEXT, MLP with cross-entropy) and its class count. */
int aimsi_model_is_classifier(const aims_model *m);
/* Softmax numerator in place: v[i] = exp(v[i] - max v); returns the sum. The
 * one implementation behind predict's probabilities and the training losses. */
float aimsi_softmax_exp(float *v, size_t n);
size_t aimsi_model_classes(const aims_model *m);

/* TEXT models (model_predict.c): h = mean of (weighted) embeddings of row `row`'s tokens
 * (embed_dim floats; text_linear: their weighted sum); z = W h + b (text_linear:
 * z = h + b) (output_dim floats); the factor the pooling applies to a document
 * of n tokens (1/n or 1); dataset check. */
void aimsi_text_hidden(const aims_model *m, const aims_dataset *ds, size_t row, float *h);
void aimsi_text_logits(const aims_model *m, const float *h, float *z);
float aimsi_text_pool_scale(const aims_model *m, uint64_t n_tokens);
aims_status aimsi_text_check(const aims_model *m, const aims_dataset *ds);
/* Score over dataset rows idx[0..n) (all rows when idx is NULL), any kind. */
aims_status aimsi_model_score_ds(const aims_model *m, const aims_dataset *ds, const size_t *idx,
                                 size_t n, int64_t *confusion, aimsi_score *out);

#endif /* AIMSI_MODEL_H */
