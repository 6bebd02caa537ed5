/*
 * aims_pipeline.h -- preprocessing pipelines with fitted state.
 *
 * A pipeline is an ordered list of steps. fit() learns each step's state from a
 * dataset (step k is fitted on the output of steps 0..k-1); transform() applies
 * the fitted steps to a dataset or to a batch of rows. A pipeline is either
 * numeric (its steps read and write dense features) or text (its steps turn raw
 * text into a token part); the first step added decides, and adding a step of
 * the other family fails with AIMS_E_INVAL.
 *
 * Numeric steps act on the columns [AIMS_STEP_COL_BEGIN, AIMS_STEP_COL_END):
 *   STANDARDIZE  (x - mean) / std; population std; a constant column gets std 1.
 *   MINMAX       maps the fitted [min, max] onto [AIMS_STEP_LOW, AIMS_STEP_HIGH];
 *                a constant column maps to AIMS_STEP_LOW.
 *   IMPUTE       replaces NaN with the fitted mean / median or AIMS_STEP_VALUE
 *                (chosen by AIMS_STEP_STRATEGY).
 *   CLIP         clamps into [AIMS_STEP_LOW, AIMS_STEP_HIGH] (no fitted state).
 *   ONEHOT       replaces each selected column (integer categories 0..k-1, k
 *                fitted as max seen + 1, capped by AIMS_STEP_MAX_CATEGORIES) by
 *                k indicator columns; unseen or non-integer values give all zeros.
 *   SCALE        x * AIMS_STEP_FACTOR (pixel scaling; no fitted state).
 * Non-finite input (NaN, inf) to any numeric step except IMPUTE is an error
 * (AIMS_E_INVAL naming row and column) unless AIMS_STEP_NONFINITE is 1, in which
 * case fit ignores such values and transform passes them through.
 *
 * Text steps must come in this order: [NORMALIZE] TOKENIZE [NGRAMS] HASH [TFIDF].
 *   NORMALIZE    lower-cases ASCII letters (AIMS_STEP_LOWERCASE); bytes that are
 *                not valid UTF-8 become separators, so tokens are always valid UTF-8.
 *   TOKENIZE     tokens are maximal runs of ASCII letters, digits, '_' and
 *                non-ASCII UTF-8 characters, at least AIMS_STEP_MIN_TOKEN_LEN
 *                bytes long (the scikit-learn default pattern \b\w\w+\b on ASCII).
 *   NGRAMS       adds word n-grams for n = 2..AIMS_STEP_NGRAM_MAX (joined by one space).
 *   HASH         MurmurHash3 (x86, 32-bit, seed 0) of each token's bytes, bucket =
 *                |h| mod AIMS_STEP_BUCKETS (scikit-learn HashingVectorizer's mapping).
 *                Output: the token part, one id per token in document order
 *                (unigrams first, then bigrams, ...), unweighted.
 *   TFIDF        merges repeated ids into (id, weight) sorted by id with weight
 *                tf * idf, idf fitted from document frequencies, then the row norm
 *                (AIMS_STEP_NORM). Matches scikit-learn TfidfTransformer.
 * An empty document (or one with no tokens) gives an empty row, never an error.
 *
 * Threads. Configuration (add, set_*), fit and load need exclusive access.
 * After fit, any number of threads may call the transform functions on one
 * pipeline at once; they write errors only to the thread-local aims_errmsg().
 */
/** @file */
#ifndef AIMS_PIPELINE_H
#define AIMS_PIPELINE_H

#include "aims_core.h"
#include "aims_dataset.h"

AIMS_EXTERN_C_BEGIN

/** A preprocessing pipeline: fitted steps applied in order (opaque). */
typedef struct aims_pipeline aims_pipeline;

/** Step kinds; values never change. */
typedef enum aims_step_kind {
    AIMS_STEP_KIND_STANDARDIZE = 1,
    AIMS_STEP_KIND_MINMAX = 2,
    AIMS_STEP_KIND_IMPUTE = 3,
    AIMS_STEP_KIND_CLIP = 4,
    AIMS_STEP_KIND_ONEHOT = 5,
    AIMS_STEP_KIND_SCALE = 6,
    AIMS_STEP_KIND_NORMALIZE = 20,
    AIMS_STEP_KIND_TOKENIZE = 21,
    AIMS_STEP_KIND_NGRAMS = 22,
    AIMS_STEP_KIND_HASH = 23,
    AIMS_STEP_KIND_TFIDF = 24
} aims_step_kind;

/**
 * @brief Create an empty pipeline.
 * @param out [out] the new pipeline; untouched on failure.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_create(aims_pipeline **out);

/** @brief Destroy a pipeline. NULL is a no-op. @since 0.1 */
AIMS_API void aims_pipeline_destroy(aims_pipeline *p);

/**
 * @brief Append a step with default parameters. Clears any fitted state.
 * @param out_index [out] optional: the step's index, for the set_step calls.
 * @param p     The pipeline; must not be NULL.
 * @param kind  The step kind (AIMS_STEP_*).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (unknown kind, mixed families,
 *         text steps out of order or repeated), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_add(aims_pipeline *p, aims_step_kind kind, size_t *out_index);

/**
 * @brief Set an integer step parameter (AIMS_STEP_*). Clears fitted state.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_RANGE (no such step, value out of bounds),
 *         AIMS_E_UNSUPPORTED (parameter does not apply to this step kind or type).
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_set_step_param_i64(aims_pipeline *p, size_t step, aims_param param,
                                                      int64_t value);
/** @brief Set a floating-point step parameter; as aims_pipeline_set_step_param_i64. @since 0.1 */
AIMS_API aims_status aims_pipeline_set_step_param_f64(aims_pipeline *p, size_t step, aims_param param,
                                                      double value);
/** @brief Read an integer step parameter. @since 0.1 */
AIMS_API aims_status aims_pipeline_get_step_param_i64(const aims_pipeline *p, size_t step,
                                                      aims_param param, int64_t *out_value);
/** @brief Read a floating-point step parameter. @since 0.1 */
AIMS_API aims_status aims_pipeline_get_step_param_f64(const aims_pipeline *p, size_t step,
                                                      aims_param param, double *out_value);

/**
 * @brief Set a pipeline-wide integer parameter (AIMS_PIPELINE_*).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_UNSUPPORTED, AIMS_E_RANGE.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_set_param_i64(aims_pipeline *p, aims_param param,
                                                 int64_t value);
/** @brief Read a pipeline-wide integer parameter. @since 0.1 */
AIMS_API aims_status aims_pipeline_get_param_i64(const aims_pipeline *p, aims_param param,
                                                 int64_t *out_value);

/** @brief Number of steps; 0 for a NULL or invalid handle. @since 0.1 */
AIMS_API size_t aims_pipeline_num_steps(const aims_pipeline *p);
/** @brief Kind of step @p step, or 0 when out of range. @since 0.1 */
AIMS_API aims_step_kind aims_pipeline_step_kind(const aims_pipeline *p, size_t step);
/** @brief Non-zero once fit() succeeded (or a fitted pipeline was loaded). @since 0.1 */
AIMS_API int aims_pipeline_is_fitted(const aims_pipeline *p);

/**
 * @brief Fit every step on @p ds.
 * Numeric pipelines need the dataset's dense part; text pipelines its text part.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (no steps, missing part, column
 *         range outside the data, non-finite values), AIMS_E_NOMEM. On failure
 *         the pipeline is left unfitted.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_fit(aims_pipeline *p, const aims_dataset *ds);

/**
 * @brief Apply the fitted pipeline to a dataset, producing a new dataset.
 * Labels, targets and class names are carried over. A numeric pipeline yields
 * dense features of aims_pipeline_output_cols() columns; a text pipeline yields
 * a token part of width aims_pipeline_output_cols() (the hash buckets).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (not fitted), AIMS_E_INVAL (wrong
 *         width, missing part, non-finite value), AIMS_E_NOMEM.
 * @note Thread safety: concurrent calls on one fitted pipeline are safe.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_transform(const aims_pipeline *p, const aims_dataset *ds,
                                             aims_dataset **out);

/** @brief fit() then transform() on the same dataset. @since 0.1 */
AIMS_API aims_status aims_pipeline_fit_transform(aims_pipeline *p, const aims_dataset *ds,
                                                 aims_dataset **out);

/**
 * @brief Transform a batch of dense rows into a caller buffer (numeric pipelines).
 * @param x        [in] rows * in_cols floats, row-major; borrowed.
 * @param rows     Number of rows (>= 1).
 * @param in_cols  Width of @p x; must equal the width the pipeline was fitted on.
 * @param out      [out] rows * aims_pipeline_output_cols() floats.
 * @param out_cap  Capacity of @p out in floats.
 * @param p  The fitted pipeline; must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (not fitted or a text pipeline),
 *         AIMS_E_INVAL (width, non-finite value), AIMS_E_RANGE (out_cap too small).
 *         On error @p out is left untouched. No allocation for pipelines without ONEHOT.
 * @note Thread safety: concurrent calls on one fitted pipeline are safe.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_transform_rows(const aims_pipeline *p, const float *x,
                                                  size_t rows, size_t in_cols, float *out,
                                                  size_t out_cap);

/**
 * @brief Transform a batch of documents with a fitted text pipeline.
 * @param texts  [in] rows pointers to UTF-8 bytes; borrowed.
 * @param lens   [in] byte lengths, or NULL when every text is NUL-terminated.
 * @param out    [out] a new dataset with a token part and no labels.
 * @param p     The fitted text pipeline; must not be NULL.
 * @param rows  Number of documents, >= 1.
 * @note Thread safety: concurrent calls on one fitted pipeline are safe.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_transform_texts(const aims_pipeline *p,
                                                   const char *const *texts, const size_t *lens,
                                                   size_t rows, aims_dataset **out);

/**
 * @brief Output width after fit: dense columns, or token id bound for text pipelines.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (not fitted).
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_output_cols(const aims_pipeline *p, size_t *out_cols);

/**
 * @brief Save steps, parameters and fitted state (container format, atomic write).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_IO, AIMS_E_NOMEM, AIMS_E_BACKEND.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_save(const aims_pipeline *p, const char *path);

/**
 * @brief Load a pipeline saved by aims_pipeline_save().
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_IO, AIMS_E_NOTFOUND, AIMS_E_CORRUPT,
 *         AIMS_E_UNSUPPORTED (newer format), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_load(const char *path, aims_pipeline **out);

/**
 * @brief Load a pipeline from the bytes of a saved file (same errors as load).
 * @param data [in] borrowed bytes; @p size their count.
 * @param size  Bytes at @p data.
 * @param out   [out] the loaded pipeline on success; untouched on failure.
 * @since 0.1
 */
AIMS_API aims_status aims_pipeline_parse(const void *data, size_t size, aims_pipeline **out);

/** @brief Detail of the last failure on this pipeline from a non-const call; "" if none. @since 0.1 */
AIMS_API const char *aims_pipeline_errmsg(const aims_pipeline *p);

AIMS_EXTERN_C_END

#endif /* AIMS_PIPELINE_H */
