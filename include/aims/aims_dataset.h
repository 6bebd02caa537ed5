/*
 * aims_dataset.h -- datasets and the loaders that fill them.
 *
 * An aims_dataset holds `rows` examples. Each example may have any of:
 *   - dense features: `cols` float32 values, row-major (aims_dataset_features);
 *   - a sparse row / token sequence: uint32 ids with optional float weights,
 *     delimited by uint64 offsets (CSR layout; aims_dataset_tokens). Token ids
 *     are < aims_dataset_token_dim(). svmlight files and the text pipeline
 *     produce this part;
 *   - raw UTF-8 text (aims_dataset_text), from the text loaders;
 *   - a label: an int32 class id in [0, num_classes) or a float target.
 * Optional class names map class ids to strings.
 *
 * Datasets are immutable once built, except aims_dataset_shuffle(), which
 * reorders rows in place. Views (aims_dataset_view) share the parent's memory:
 * the parent stays alive while a view exists (reference counting), and a dataset
 * that has live views refuses to shuffle (AIMS_E_STATE).
 *
 * Loaders treat every file as hostile: sizes are checked before reads, counts
 * from a file are capped by AIMS_LOAD_MAX_BYTES, and errors name the file and the
 * line or byte offset (aims_errmsg()). gzip-compressed inputs are recognised and
 * refused with AIMS_E_UNSUPPORTED ("decompress first").
 *
 * Threads. Any number of threads may call const functions on one dataset at
 * once. aims_dataset_shuffle() needs exclusive access. Different datasets are
 * independent.
 */
/** @file */
#ifndef AIMS_DATASET_H
#define AIMS_DATASET_H

#include "aims_core.h"

AIMS_EXTERN_C_BEGIN

/** A dataset: dense rows or texts, with optional labels (opaque). */
typedef struct aims_dataset aims_dataset;
/** Options for the dataset loaders (opaque; see aims_loadopts_create). */
typedef struct aims_loadopts aims_loadopts;

/** Input formats understood by aims_dataset_parse() / aims_dataset_load_file(). */
typedef enum aims_format {
    AIMS_FORMAT_IDX = 1,      /**< IDX (MNIST family): images (ndim >= 2) or labels (ndim 1) */
    AIMS_FORMAT_CSV = 2,      /**< delimited text, RFC 4180 quoting */
    AIMS_FORMAT_SVMLIGHT = 3, /**< "label idx:val idx:val ... # comment" lines */
    AIMS_FORMAT_TEXT = 4,     /**< "label<TAB>text" lines; labels become class names */
    AIMS_FORMAT_AIMS = 5      /**< a dataset saved by aims_dataset_save() */
} aims_format;

/* ------------------------------------------------------------------------ */
/* Loader options                                                             */

/**
 * @brief Create a loader options object holding the defaults (see AIMS_LOAD_*).
 * @param out [out] the new object; untouched on failure.
 * @return AIMS_OK, AIMS_E_MISUSE (NULL out), AIMS_E_NOMEM.
 * @note Thread safety: an options object may be shared by concurrent loads once
 *       no thread changes it.
 * @since 0.1
 */
AIMS_API aims_status aims_loadopts_create(aims_loadopts **out);

/** @brief Destroy an options object. NULL is a no-op. @since 0.1 */
AIMS_API void aims_loadopts_destroy(aims_loadopts *opts);

/**
 * @brief Set an integer loader option (AIMS_LOAD_*).
 * @return AIMS_OK; AIMS_E_MISUSE (bad handle); AIMS_E_UNSUPPORTED (not a loader
 *         option or not an integer option); AIMS_E_RANGE (outside aims_param_info bounds).
 * @since 0.1
 */
AIMS_API aims_status aims_loadopts_set_param_i64(aims_loadopts *opts, aims_param param, int64_t value);

/** @brief Read an integer loader option. Errors as aims_loadopts_set_param_i64. @since 0.1 */
AIMS_API aims_status aims_loadopts_get_param_i64(const aims_loadopts *opts, aims_param param,
                                                 int64_t *out_value);

/** @brief Detail of the last failure on this options object from a non-const
 * call; "" if none (or for a bad handle). @since 0.1 */
AIMS_API const char *aims_loadopts_errmsg(const aims_loadopts *opts);

/* ------------------------------------------------------------------------ */
/* Loading                                                                    */

/**
 * @brief Parse a dataset from bytes in memory.
 *
 * @param format  AIMS_FORMAT_CSV, _SVMLIGHT, _TEXT, _IDX or _AIMS.
 * @param data    [in] the bytes; borrowed. May be NULL only when @p size is 0.
 * @param size    Number of bytes.
 * @param opts    Options, or NULL for defaults.
 * @param out     [out] the new dataset; untouched on failure.
 * @return AIMS_OK; AIMS_E_MISUSE; AIMS_E_CORRUPT (malformed input, message names
 *         line/byte); AIMS_E_UNSUPPORTED (gzip, unknown version); AIMS_E_RANGE
 *         (input exceeds AIMS_LOAD_MAX_BYTES or a declared count is too large);
 *         AIMS_E_INVAL (empty input, contradictory options); AIMS_E_NOMEM.
 * @note CSV: every field of a data line must parse as a number (or be empty /
 *       "NA" / "NaN" / "?", which AIMS_LOAD_MISSING turns into NaN or an error);
 *       ragged rows are AIMS_E_CORRUPT. Class labels must be integers >= 0.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_parse(aims_format format, const void *data, size_t size,
                                        const aims_loadopts *opts, aims_dataset **out);

/**
 * @brief Load a dataset from a file; same formats and errors as aims_dataset_parse,
 * plus AIMS_E_IO / AIMS_E_NOTFOUND when the file cannot be read.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_load_file(aims_format format, const char *path,
                                            const aims_loadopts *opts, aims_dataset **out);

/**
 * @brief Load an IDX image file and (optionally) its IDX label file.
 *
 * Image values (u8, i8, i16, i32, f32, f64 element types) become float32
 * features, one row per item, cols = product of the inner dimensions. Labels
 * must be u8/i8/i16/i32 integers >= 0; the item counts must agree.
 * @param images_path IDX file with ndim >= 1 (ndim 1 gives one column).
 * @param labels_path IDX file with ndim 1, or NULL.
 * @param opts  Loader options, or NULL for the defaults.
 * @param out   [out] the new dataset on success; untouched on failure.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_load_idx(const char *images_path, const char *labels_path,
                                           const aims_loadopts *opts, aims_dataset **out);

/**
 * @brief Load a directory of one-topic-per-file documents (the fortunes layout).
 *
 * Each regular file is a topic; its name is the class name. Entries are
 * separated by lines holding only "%". Skipped: names starting with '.', names
 * ending in ".dat" or ".u8", symlinks, sub-directories, and topics with fewer
 * than AIMS_LOAD_MIN_DOCS non-empty entries. Backspace over-strike pairs
 * ("X\b") are removed and empty entries dropped. Topics are ordered by name so
 * class ids are reproducible. Documents are raw text rows.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_load_topics(const char *dir, const aims_loadopts *opts,
                                              aims_dataset **out);

/* ------------------------------------------------------------------------ */
/* Building from host memory                                                  */

/**
 * @brief Create a dense dataset by copying host arrays.
 * @param rows    Number of rows (>= 1).
 * @param cols    Features per row (>= 1).
 * @param x       [in] rows*cols floats, row-major; copied.
 * @param labels  [in] rows class ids >= 0, or NULL; copied.
 * @param out     [out] the new dataset.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (zero size, negative label, a value of
 *         @p x that is NaN or inf: the message names its row and column), AIMS_E_NOMEM.
 * @note Same as aims_dataset_create_dense_v2() with default options: non-finite
 *       features are refused.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_create_dense(size_t rows, size_t cols, const float *x,
                                               const int32_t *labels, aims_dataset **out);

/**
 * @brief aims_dataset_create_dense() with loader options.
 *
 * Of @p opts only AIMS_LOAD_NONFINITE applies: 0 (default) refuses NaN and inf in
 * @p x with AIMS_E_INVAL naming the first one's row and column (1-based); 1 keeps
 * them, e.g. NaN as missing values for an IMPUTE step.
 * @param opts    Options, or NULL for the defaults; borrowed.
 * @param rows    Number of rows, >= 1.
 * @param cols    Number of columns (features) per row, >= 1.
 * @param x       [in] rows x cols floats, row-major; copied.
 * @param labels  [in] rows class ids (>= 0), or NULL for an unlabelled dataset; copied.
 * @param out     [out] the new dataset on success; untouched on failure.
 * @return As aims_dataset_create_dense().
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_create_dense_v2(size_t rows, size_t cols, const float *x,
                                                  const int32_t *labels,
                                                  const aims_loadopts *opts, aims_dataset **out);

/**
 * @brief Create a text dataset by copying @p rows documents.
 * @param texts   [in] rows pointers to UTF-8 bytes; copied.
 * @param lens    [in] byte lengths, or NULL when every text is NUL-terminated.
 * @param labels  [in] rows class ids >= 0, or NULL.
 * @param rows  Number of documents, >= 1.
 * @param out   [out] the new dataset on success; untouched on failure.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_create_texts(size_t rows, const char *const *texts,
                                               const size_t *lens, const int32_t *labels,
                                               aims_dataset **out);

/** @brief Destroy a dataset (or drop a view's reference). NULL is a no-op. @since 0.1 */
AIMS_API void aims_dataset_destroy(aims_dataset *ds);

/* ------------------------------------------------------------------------ */
/* Accessors (borrowed pointers valid while the dataset lives)                */

/** @brief Number of rows; 0 for a NULL or invalid handle. @since 0.1 */
AIMS_API size_t aims_dataset_rows(const aims_dataset *ds);
/** @brief Dense feature columns; 0 when the dataset has no dense part. @since 0.1 */
AIMS_API size_t aims_dataset_cols(const aims_dataset *ds);
/** @brief Dense features, rows*cols floats row-major, or NULL. @since 0.1 */
AIMS_API const float *aims_dataset_features(const aims_dataset *ds);
/** @brief Class ids (rows int32), or NULL when there are none. @since 0.1 */
AIMS_API const int32_t *aims_dataset_labels(const aims_dataset *ds);
/** @brief Float targets (rows floats), or NULL when there are none. @since 0.1 */
AIMS_API const float *aims_dataset_targets(const aims_dataset *ds);
/** @brief Number of classes (max label + 1, or the class-name count); 0 without labels. @since 0.1 */
AIMS_API size_t aims_dataset_num_classes(const aims_dataset *ds);
/** @brief Name of class @p k, or NULL when the dataset has no names or k is out of range. @since 0.1 */
AIMS_API const char *aims_dataset_class_name(const aims_dataset *ds, size_t k);

/**
 * @brief The sparse / token part in CSR layout.
 * @param ds           Dataset.
 * @param out_offsets  [out] rows+1 offsets into ids (first is 0 for a whole dataset,
 *                     not for a view: use offsets[i]..offsets[i+1] as given).
 * @param out_ids      [out] token ids.
 * @param out_weights  [out] optional: per-token weights, or NULL when unweighted.
 * @return AIMS_OK; AIMS_E_MISUSE; AIMS_E_STATE when the dataset has no token part
 *         (outputs untouched).
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_tokens(const aims_dataset *ds, const uint64_t **out_offsets,
                                         const uint32_t **out_ids, const float **out_weights);

/** @brief Upper bound on token ids (hash buckets / sparse width); 0 without tokens. @since 0.1 */
AIMS_API size_t aims_dataset_token_dim(const aims_dataset *ds);

/**
 * @brief Raw text of row @p row (not NUL-terminated).
 * @return pointer to the bytes and their length in *out_len, or NULL when the
 *         dataset has no text part or row is out of range.
 * @since 0.1
 */
AIMS_API const char *aims_dataset_text(const aims_dataset *ds, size_t row, size_t *out_len);

/** @brief Detail of the last failure on this dataset; "" if none. @since 0.1 */
AIMS_API const char *aims_dataset_errmsg(const aims_dataset *ds);

/* ------------------------------------------------------------------------ */
/* Reordering, splitting, views                                               */

/**
 * @brief Shuffle rows in place with a seeded RNG (same seed, same order).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_STATE (dataset is a view or has live views), AIMS_E_NOMEM.
 * @note Thread safety: needs exclusive access to @p ds.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_shuffle(aims_dataset *ds, uint64_t seed);

/**
 * @brief Zero-copy view of rows [begin, begin+count): shares memory with @p ds.
 * The view keeps @p ds alive; destroy both in any order.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_RANGE (rows out of range, count 0), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_view(const aims_dataset *ds, size_t begin, size_t count,
                                       aims_dataset **out);

/**
 * @brief Copy the rows listed in @p idx (in that order) into a new dataset.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_RANGE (an index out of range), AIMS_E_NOMEM.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_select(const aims_dataset *ds, const size_t *idx, size_t n,
                                         aims_dataset **out);

/**
 * @brief Split into train and test sets (copies).
 *
 * Stratified splits keep each class's share (per class: round(n_k * test_fraction)
 * rows go to test, at least one when n_k >= 2); otherwise a seeded random split.
 * Rows keep their original relative order inside each part.
 * @param test_fraction In (0, 1).
 * @param seed          RNG seed: same seed, same split.
 * @param stratified    Non-zero for a stratified split (needs class labels).
 * @param ds         The dataset to split; borrowed, must not be NULL.
 * @param out_train  [out] the training part (a new dataset).
 * @param out_test   [out] the test part (a new dataset).
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_INVAL (fraction, no labels for stratified,
 *         a part would be empty), AIMS_E_NOMEM. Outputs untouched on failure.
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_split(const aims_dataset *ds, double test_fraction,
                                        uint64_t seed, int stratified, aims_dataset **out_train,
                                        aims_dataset **out_test);

/* ------------------------------------------------------------------------ */
/* Persistence                                                                */

/**
 * @brief Save in the libaims container format (zstd sections, checksummed).
 * The write is atomic: a temporary file is written, flushed and renamed over
 * @p path, so a crash never leaves a half-written file in its place.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_IO, AIMS_E_NOMEM, AIMS_E_BACKEND (zstd).
 * @since 0.1
 */
AIMS_API aims_status aims_dataset_save(const aims_dataset *ds, const char *path);

AIMS_EXTERN_C_END

#endif /* AIMS_DATASET_H */
