/*
 * aims_model.h -- models, training, evaluation, inference, quantization, bundles.
 *
 * Model kinds (aims_model_create):
 *   LINEAR    linear regression: out = x W^T + b, loss MSE; output_dim targets.
 *   LOGISTIC  binary logistic regression: one logit, sigmoid, binary cross-entropy;
 *             labels 0/1; probabilities are reported as two columns (1-p, p).
 *   SOFTMAX   multinomial logistic regression: output_dim logits, softmax, cross-entropy.
 *   MLP       dense layers added with aims_model_add_dense(), then an output layer
 *             of output_dim units; cross-entropy (classes) or MSE (targets) by
 *             AIMS_MODEL_LOSS; optional dropout on hidden layers while training.
 *   TEXT      bag of n-grams (fastText style): mean of hashed token embeddings
 *             (AIMS_MODEL_EMBED_DIM wide, input_dim = token id bound) -> linear ->
 *             softmax. Consumes the token part produced by a text pipeline
 *             (token weights, when present, weight the mean). Trained like
 *             fastText: one document per step, plain SGD (momentum, Adam,
 *             batch and schedule do not apply), learning rate decaying
 *             linearly to 0 over the run; embeddings of tokens that never occur
 *             in the training data stay 0. With AIMS_MODEL_TEXT_LINEAR = 1 there
 *             is no embedding: each token id has one weight per class and the
 *             scores are the token-weighted SUM of those rows plus a bias (give
 *             it l2-normalised TF-IDF weights: scikit-learn's hashing + TF-IDF +
 *             linear classifier). AIMS_MODEL_LOSS = 3 trains TEXT models with the
 *             one-vs-rest hinge loss (SGDClassifier's default); probabilities
 *             are then the softmax of the scores.
 *
 * Weights are float32. Dense layers keep W as out x in, row-major.
 *
 * Threads. Configuration (add, set_param) and training need exclusive access to
 * the model. Predict and evaluate are const: any number of threads may predict
 * on one model at once. Training: on a CPU with AVX-512 or AVX2+FMA the big GEMMs run in
 * libaims' own kernels (fp32, or bf16 operands with fp32 sums when
 * AIMS_MODEL_PRECISION = 1) on AIMS_TRAIN_THREADS threads of the trainer's own pool
 * (default: all cores), and the rest of a step (batch gather, optimizer
 * update) is spread over the same threads; AIMS_TRAIN_GEMM = 1 sends them to
 * OpenBLAS instead. Other dense math runs in OpenBLAS, whose thread count is
 * process-wide: the OpenBLAS 0.3.21 this library targets has no per-call or
 * per-thread setting (no openblas_set_num_threads_local), so libaims never
 * calls openblas_set_num_threads and those GEMMs use OpenBLAS's own count
 * (environment OPENBLAS_NUM_THREADS; default: all cores). To keep several
 * services on one machine from oversubscribing the cores, set
 * OPENBLAS_NUM_THREADS (1 for many concurrent predictors) and train_threads.
 * The single-row predict path never uses BLAS threads. AIMS_MODEL_THREADS is
 * recorded; AIMS_TRAIN_THREADS is part of a checkpoint's identity.
 *
 * Determinism. Same seed, data and parameters -> same weights, bit for bit,
 * whatever train_threads is when the own kernels run (their sums never depend
 * on the split); on the OpenBLAS path also the same OpenBLAS thread count. A
 * run resumed from a checkpoint ends identical to an uninterrupted one.
 */
/** @file */
#ifndef AIMS_MODEL_H
#define AIMS_MODEL_H

#include "aims_core.h"
#include "aims_dataset.h"
#include "aims_pipeline.h"

AIMS_EXTERN_C_BEGIN

/** A model: kind, shape and parameters (opaque). */
typedef struct aims_model aims_model;
/** A training run over one model and one dataset (opaque). */
typedef struct aims_trainer aims_trainer;
/** Evaluation results: accuracy, loss, confusion matrix (opaque). */
typedef struct aims_eval aims_eval;
/** A pipeline and a model saved and served together (opaque). */
typedef struct aims_bundle aims_bundle;

/** Model kinds; values never change. */
typedef enum aims_model_kind {
    AIMS_MODEL_KIND_LINEAR = 1,
    AIMS_MODEL_KIND_LOGISTIC = 2,
    AIMS_MODEL_KIND_SOFTMAX = 3,
    AIMS_MODEL_KIND_MLP = 4,
    AIMS_MODEL_KIND_TEXT = 5
} aims_model_kind;

/** Activations for dense layers. */
typedef enum aims_activation {
    AIMS_ACT_NONE = 0,
    AIMS_ACT_RELU = 1,
    AIMS_ACT_GELU = 2, /* tanh approximation */
    AIMS_ACT_TANH = 3,
    AIMS_ACT_SIGMOID = 4
} aims_activation;

/** What predict writes per row. */
typedef enum aims_output {
    AIMS_OUT_SCORES = 1, /**< logits (classifiers) or predicted values (regression) */
    AIMS_OUT_PROBA = 2   /**< class probabilities (classifiers only) */
} aims_output;

/** Evaluation metrics (aims_eval_get_metric). */
typedef enum aims_eval_metric {
    AIMS_EVAL_METRIC_ACCURACY = 1,
    AIMS_EVAL_METRIC_MACRO_F1 = 2,
    AIMS_EVAL_METRIC_LOG_LOSS = 3,
    AIMS_EVAL_METRIC_MSE = 4,
    AIMS_EVAL_METRIC_R2 = 5,
    AIMS_EVAL_METRIC_ROWS = 6
} aims_eval_metric;

/** Training progress values (aims_trainer_get_stat()). */
typedef enum aims_trainer_stat {
    AIMS_TRAINER_STAT_EPOCH = 1,         /**< epochs completed */
    AIMS_TRAINER_STAT_STEP = 2,          /**< optimizer steps completed */
    AIMS_TRAINER_STAT_TRAIN_LOSS = 3,    /**< mean training loss over the last epoch (or so far) */
    AIMS_TRAINER_STAT_VAL_LOSS = 4,      /**< validation loss after the last epoch (NaN without validation) */
    AIMS_TRAINER_STAT_VAL_ACCURACY = 5,  /**< validation accuracy after the last epoch (NaN if n/a) */
    AIMS_TRAINER_STAT_SAMPLES_PER_S = 6, /**< training throughput over the last epoch */
    AIMS_TRAINER_STAT_LR = 7,            /**< learning rate of the next step */
    AIMS_TRAINER_STAT_BEST_EPOCH = 8,    /**< epoch with the best validation metric so far */
    AIMS_TRAINER_STAT_STEPS_PER_EPOCH = 9
} aims_trainer_stat;

/* ------------------------------------------------------------------------ */
/* Models                                                                     */

/**
 * @brief Create an untrained model.
 * @param kind        Model kind.
 * @param input_dim   Features per row (dense kinds) or token id bound (TEXT).
 * @param output_dim  Classes (SOFTMAX, MLP classifier, TEXT), 1 (LOGISTIC), or
 *                    targets (LINEAR, MLP regression).
 * @param out         [out] the new model; untouched on failure.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (unknown kind, zero dims,
 *         LOGISTIC with output_dim != 1), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_model_create(aims_model_kind kind, size_t input_dim,
                                       size_t output_dim, aims_model **out);

/** @brief Destroy a model. NULL is a no-op. @since 0.1 */
AIMS_API void aims_model_destroy(aims_model *m);

/**
 * @brief Append a hidden dense layer (MLP only; before training).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (not an MLP, units 0, unknown
 *         activation), AIMS_E_STATE (already trained), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_model_add_dense(aims_model *m, size_t units, aims_activation act);

/**
 * @brief Set a model parameter (AIMS_MODEL_*; 400..499).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_UNSUPPORTED, AIMS_E_RANGE, AIMS_E_STATE
 *         (a structural parameter after training started).
 * @since 0.1
 */
AIMS_API aims_status aims_model_set_param_i64(aims_model *m, aims_param param, int64_t value);
/** @brief Set a floating-point model parameter. @since 0.1 */
AIMS_API aims_status aims_model_set_param_f64(aims_model *m, aims_param param, double value);
/** @brief Read an integer model parameter. @since 0.1 */
AIMS_API aims_status aims_model_get_param_i64(const aims_model *m, aims_param param,
                                              int64_t *out_value);
/** @brief Read a floating-point model parameter. @since 0.1 */
AIMS_API aims_status aims_model_get_param_f64(const aims_model *m, aims_param param,
                                              double *out_value);

/** @brief Kind of the model, or 0 for an invalid handle. @since 0.1 */
AIMS_API aims_model_kind aims_model_kind_of(const aims_model *m);
/** @brief Input width (features, or token id bound for TEXT); 0 if invalid. @since 0.1 */
AIMS_API size_t aims_model_input_dim(const aims_model *m);
/** @brief Values written per row by predict (classes; 2 for LOGISTIC probabilities). @since 0.1 */
AIMS_API size_t aims_model_output_dim(const aims_model *m);
/** @brief Number of trainable float parameters (0 before the structure is final). @since 0.1 */
AIMS_API size_t aims_model_num_params(const aims_model *m);
/** @brief Non-zero once the model has weights (trained, loaded or quantized). @since 0.1 */
AIMS_API int aims_model_is_trained(const aims_model *m);
/** @brief Non-zero for an int8-quantized model. @since 0.1 */
AIMS_API int aims_model_is_quantized(const aims_model *m);
/** @brief Detail of the last failure of a non-const call on this model; "" if none. @since 0.1 */
AIMS_API const char *aims_model_errmsg(const aims_model *m);

/**
 * @brief Predict for dense rows.
 * @param m        Trained model of a dense kind.
 * @param what     AIMS_OUT_SCORES or AIMS_OUT_PROBA.
 * @param x        [in] rows * cols floats, row-major; borrowed.
 * @param rows     Number of rows (>= 1).
 * @param cols     Width of @p x; must equal aims_model_input_dim().
 * @param out      [out] rows * aims_model_output_dim() floats.
 * @param out_cap  Capacity of @p out in floats.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (untrained), AIMS_E_INVAL (width,
 *         PROBA on a regression model, TEXT model), AIMS_E_RANGE (out_cap), AIMS_E_NOMEM.
 *         On error @p out is left untouched. A single row does not allocate.
 * @note Thread safety: any number of threads may predict on one model at once.
 * @since 0.1
 */
AIMS_API aims_status aims_model_predict(const aims_model *m, aims_output what, const float *x,
                                        size_t rows, size_t cols, float *out, size_t out_cap);

/**
 * @brief Predict class ids (argmax of the scores; LOGISTIC: p >= 0.5) for dense rows.
 * @param out [out] rows int32 class ids; @p out_cap its capacity in elements.
 * @param m        The model; must not be NULL (else AIMS_E_MISUSE).
 * @param x        [in] rows x cols floats, row-major; borrowed for the call.
 * @param rows     Number of rows, >= 1.
 * @param cols     Floats per row; must equal aims_model_input_dim(m).
 * @param out_cap  Capacity of @p out in elements (>= rows).
 * @return as aims_model_predict; AIMS_E_INVAL for a regression model.
 * @since 0.1
 */
AIMS_API aims_status aims_model_predict_class(const aims_model *m, const float *x, size_t rows,
                                              size_t cols, int32_t *out, size_t out_cap);

/**
 * @brief Predict for every row of a dataset (dense part, or token part for TEXT).
 * @param out [out] rows * aims_model_output_dim() floats.
 * @param m        The model; must not be NULL (else AIMS_E_MISUSE).
 * @param what     AIMS_OUT_SCORES or AIMS_OUT_PROBA.
 * @param ds       The rows to predict; borrowed, must not be NULL.
 * @param out_cap  Capacity of @p out in elements; too small gives AIMS_E_RANGE.
 * @since 0.1
 */
AIMS_API aims_status aims_model_predict_dataset(const aims_model *m, aims_output what,
                                                const aims_dataset *ds, float *out,
                                                size_t out_cap);

/**
 * @brief Evaluate on a labelled dataset (class ids or float targets).
 * @param out [out] a new evaluation object; free with aims_eval_destroy().
 * @param m   The model; must not be NULL (else AIMS_E_MISUSE).
 * @param ds  Labelled data (class ids or float targets); borrowed.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (untrained), AIMS_E_INVAL (no labels,
 *         width mismatch, label >= classes), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_model_evaluate(const aims_model *m, const aims_dataset *ds,
                                         aims_eval **out);

/**
 * @brief Save the model (container format, kind "model"; atomic write).
 * @since 0.1
 */
AIMS_API aims_status aims_model_save(const aims_model *m, const char *path);
/** @brief Load a model saved by aims_model_save(). @since 0.1 */
AIMS_API aims_status aims_model_load(const char *path, aims_model **out);
/** @brief Load a model from the bytes of a saved file. @since 0.1 */
AIMS_API aims_status aims_model_parse(const void *data, size_t size, aims_model **out);
/** @brief Deep copy of a model (weights included). @since 0.1 */
AIMS_API aims_status aims_model_clone(const aims_model *m, aims_model **out);

/**
 * @brief Post-training int8 quantization of the dense layers.
 *
 * Per-output-channel symmetric scales for weights; activation ranges calibrated
 * on up to 1024 rows of @p calib. The result is a new model with the same
 * interface (predict, evaluate, save) and aims_model_is_quantized() true.
 * @param calib  Dataset with the model's input width (dense part).
 * @param m    The trained fp32 model; unchanged (must not be NULL).
 * @param out  [out] a new int8 model; free with aims_model_destroy().
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (untrained, already quantized),
 *         AIMS_E_UNSUPPORTED (TEXT models), AIMS_E_INVAL (width), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_model_quantize(const aims_model *m, const aims_dataset *calib,
                                         aims_model **out);

/* ------------------------------------------------------------------------ */
/* Evaluation results                                                         */

/** @brief Destroy an evaluation. NULL is a no-op. @since 0.1 */
AIMS_API void aims_eval_destroy(aims_eval *ev);
/**
 * @brief Read a metric.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_UNSUPPORTED (metric does not apply:
 *         classification metrics on regression and vice versa).
 * @since 0.1
 */
AIMS_API aims_status aims_eval_get_metric(const aims_eval *ev, aims_eval_metric metric, double *out_value);
/** @brief Number of classes in the confusion matrix (0 for regression). @since 0.1 */
AIMS_API size_t aims_eval_num_classes(const aims_eval *ev);
/**
 * @brief Copy the confusion matrix: out[true * k + predicted], k = aims_eval_num_classes().
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_UNSUPPORTED (regression), AIMS_E_RANGE (out_cap < k*k).
 * @since 0.1
 */
AIMS_API aims_status aims_eval_get_confusion(const aims_eval *ev, int64_t *out, size_t out_cap);

/* ------------------------------------------------------------------------ */
/* Training                                                                   */

/**
 * Progress callback, called after every epoch (and from aims_trainer_step when an
 * epoch ends) on the training thread. Read values with aims_trainer_get_stat().
 * Return 0 to continue, non-zero to stop (the run ends with AIMS_E_CANCELLED).
 */
typedef int (*aims_progress_fn)(void *user, const aims_trainer *t);

/**
 * @brief Create a trainer for @p m. The trainer borrows the model: keep it alive
 * and do not use it from other threads while the trainer exists.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_trainer_create(aims_model *m, aims_trainer **out);
/** @brief Destroy a trainer (the model keeps its weights). NULL is a no-op. @since 0.1 */
AIMS_API void aims_trainer_destroy(aims_trainer *t);
/** @brief Set an integer trainer parameter (AIMS_TRAIN_*; 500..599). @since 0.1 */
AIMS_API aims_status aims_trainer_set_param_i64(aims_trainer *t, aims_param param,
                                                int64_t value);
/** @brief Set a floating-point trainer parameter. @since 0.1 */
AIMS_API aims_status aims_trainer_set_param_f64(aims_trainer *t, aims_param param,
                                                double value);
/** @brief Read an integer trainer parameter. @since 0.1 */
AIMS_API aims_status aims_trainer_get_param_i64(const aims_trainer *t, aims_param param,
                                                int64_t *out_value);
/** @brief Read a floating-point trainer parameter. @since 0.1 */
AIMS_API aims_status aims_trainer_get_param_f64(const aims_trainer *t, aims_param param,
                                                double *out_value);
/** @brief Install the progress callback (NULL to remove). @since 0.1 */
AIMS_API aims_status aims_trainer_set_progress_fn(aims_trainer *t, aims_progress_fn fn, void *user);

/**
 * @brief Start a run: initialise weights (seeded; unless the model is already
 * trained and AIMS_TRAIN_WARM_START is 1), optimizer state and the data order.
 * @param train  Training data (dense part + labels/targets, or tokens for TEXT);
 *               borrowed until the run ends or the trainer is destroyed.
 * @param val    Validation data or NULL; with NULL and AIMS_TRAIN_VAL_FRACTION > 0
 *               a seeded stratified part of @p train is held out.
 * @param t  The trainer; must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (shapes, labels, parameters, a feature
 *         or target that is NaN or inf -- the message names its row and column),
 *         AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_trainer_begin(aims_trainer *t, const aims_dataset *train,
                                        const aims_dataset *val);

/**
 * @brief One optimizer step (one mini-batch). Sets *out_done when the run is over
 * (epochs exhausted or early stopping).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (no run), AIMS_E_CANCELLED, AIMS_E_NOMEM,
 *         AIMS_E_RANGE when the training diverged: the step's loss is NaN or inf (the
 *         message names the step and epoch). The run then ends: later steps return
 *         the same status, parameters may be set again. The weights are those of the last step whose loss
 *         was finite, which may already hold inf: train again (a new begin) with a
 *         lower learning rate.
 * @since 0.1
 */
AIMS_API aims_status aims_trainer_step(aims_trainer *t, int *out_done);

/** @brief Steps until the current epoch ends; as aims_trainer_step. @since 0.1 */
AIMS_API aims_status aims_trainer_epoch(aims_trainer *t, int *out_done);

/**
 * @brief Run to the end: begin() then epochs until done. With early stopping the
 * model ends with the weights of the best validation epoch.
 * @return AIMS_OK, AIMS_E_CANCELLED (callback or aims_trainer_cancel; the model
 *         keeps the weights of the last completed step), or an error of begin/step.
 * @since 0.1
 */
AIMS_API aims_status aims_trainer_fit(aims_trainer *t, const aims_dataset *train,
                                      const aims_dataset *val);

/**
 * @brief Ask a running fit/step/epoch to stop at the next step boundary.
 * @note Thread safety: may be called from any thread at any time.
 * @since 0.1
 */
AIMS_API void aims_trainer_cancel(aims_trainer *t);

/**
 * @brief Read a progress value.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_UNSUPPORTED (unknown stat).
 * @since 0.1
 */
AIMS_API aims_status aims_trainer_get_stat(const aims_trainer *t, aims_trainer_stat stat, double *out_value);

/**
 * @brief Write a checkpoint of the running training (weights, optimizer state, RNG,
 * counters, data order) atomically to @p path.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (no run), AIMS_E_IO, AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_trainer_checkpoint(const aims_trainer *t, const char *path);

/**
 * @brief Resume from a checkpoint: call after aims_trainer_begin() with the same
 * data and parameters; continuing gives the same result as never stopping.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (no run), AIMS_E_CORRUPT,
 *         AIMS_E_INVAL (checkpoint does not match model/data/parameters), AIMS_E_IO.
 * @since 0.1
 */
AIMS_API aims_status aims_trainer_restore(aims_trainer *t, const char *path);

/** @brief Detail of the last failure on this trainer; "" if none. @since 0.1 */
AIMS_API const char *aims_trainer_errmsg(const aims_trainer *t);

/* ------------------------------------------------------------------------ */
/* Bundles: pipeline + model + metadata in one file, for serving raw inputs   */

/**
 * @brief Create a bundle from copies of a fitted pipeline (or NULL) and a trained model.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (unfitted pipeline / untrained model),
 *         AIMS_E_INVAL (pipeline output width != model input width), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_bundle_create(const aims_pipeline *p, const aims_model *m,
                                        aims_bundle **out);
/** @brief Destroy a bundle. NULL is a no-op. @since 0.1 */
AIMS_API void aims_bundle_destroy(aims_bundle *b);
/**
 * @brief Set a metadata string (copied). Well-known keys: "name", "version",
 * "classes" (newline-separated class names), "metrics" (JSON), "data_fingerprint".
 * "library_version" is set by the library. Keys are 1..64 bytes, values < 1 MiB;
 * at most 1024 keys and 64 MiB of keys + values in all.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (key/value size, "library_version"),
 *         AIMS_E_RANGE (key count or total size), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_bundle_set_meta(aims_bundle *b, const char *key, const char *value);
/** @brief Metadata value for @p key, or NULL. Valid while the bundle lives. @since 0.1 */
AIMS_API const char *aims_bundle_meta(const aims_bundle *b, const char *key);
/** @brief The bundle's model (borrowed). @since 0.1 */
AIMS_API const aims_model *aims_bundle_model(const aims_bundle *b);
/** @brief The bundle's pipeline (borrowed), or NULL. @since 0.1 */
AIMS_API const aims_pipeline *aims_bundle_pipeline(const aims_bundle *b);
/** @brief Save atomically (container kind "bundle"). @since 0.1 */
AIMS_API aims_status aims_bundle_save(const aims_bundle *b, const char *path);
/** @brief Load a bundle. @since 0.1 */
AIMS_API aims_status aims_bundle_load(const char *path, aims_bundle **out);
/** @brief Load a bundle from bytes. @since 0.1 */
AIMS_API aims_status aims_bundle_parse(const void *data, size_t size, aims_bundle **out);

/**
 * @brief Predict from raw dense rows: pipeline transform, then model predict.
 * @note Thread safety: concurrent calls on one bundle are safe.
 * @since 0.1
 */
AIMS_API aims_status aims_bundle_predict_rows(const aims_bundle *b, aims_output what,
                                              const float *x, size_t rows, size_t cols,
                                              float *out, size_t out_cap);
/**
 * @brief Predict from raw documents (text pipeline + TEXT or sparse model).
 * @param lens [in] byte lengths, or NULL for NUL-terminated texts.
 * @param b        The bundle; must not be NULL.
 * @param what     AIMS_OUT_SCORES or AIMS_OUT_PROBA.
 * @param texts    [in] rows pointers to UTF-8 documents; borrowed for the call.
 * @param rows     Number of documents, >= 1.
 * @param out      [out] rows x the model's output dim floats.
 * @param out_cap  Capacity of @p out in elements; too small gives AIMS_E_RANGE.
 * @since 0.1
 */
AIMS_API aims_status aims_bundle_predict_texts(const aims_bundle *b, aims_output what,
                                               const char *const *texts, const size_t *lens,
                                               size_t rows, float *out, size_t out_cap);

/** @brief Detail of the last failure on this bundle from a non-const call
 * (aims_bundle_set_meta); "" if none (or for a bad handle). Predict and save
 * are const: their detail is in aims_errmsg(). @since 0.1 */
AIMS_API const char *aims_bundle_errmsg(const aims_bundle *b);

AIMS_EXTERN_C_END

#endif /* AIMS_MODEL_H */
