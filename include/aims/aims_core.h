/*
 * aims_core.h -- status codes, versions, allocator hook, logging, parameters.
 *
 * This header is the specification of the contracts every libaims module keeps.
 *
 * Errors. Every fallible call returns an aims_status; AIMS_OK (0) is success.
 * Codes have explicit values that are never renumbered or reused. A failed call
 * leaves its outputs untouched and leaks nothing. The detail of the most recent
 * failure (file, line, byte offset, parameter name) is kept twice: on the handle
 * the call was made on (aims_<object>_errmsg) and in a thread-local slot
 * (aims_errmsg) that constructors and const calls also fill. Objects with an
 * owner's non-const calls have an errmsg: dataset, loadopts, pipeline, model,
 * trainer, bundle, node, service, client. Objects that many threads call at
 * once (registry, balancer, health, metrics), read-only results (eval) and
 * messages (aims_msg, whose aims_msg_error is a handler's reply text) have
 * none: a per-handle slot would be a race between threads, so their detail is
 * in aims_errmsg() of the calling thread only.
 *
 * Ownership. Pointers passed in are borrowed for the duration of the call unless
 * the function's doc says otherwise. Strings handed to setters are copied.
 * Pointers returned by accessors are owned by the handle and stay valid until the
 * handle is destroyed (or the doc names an earlier point). Memory the library
 * allocates *for the caller* is released with aims_free().
 *
 * Threads. Functions in this header are thread-safe, except aims_set_allocator()
 * and aims_set_log(), which belong to start-up: call them before any other
 * libaims call, from one thread. There is no other process-global mutable state.
 *
 * The library never prints, aborts or exits. It reports through return codes and
 * the log callback.
 */
/** @file */
#ifndef AIMS_CORE_H
#define AIMS_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "aims_export.h"
#include "aims_version.h"

AIMS_EXTERN_C_BEGIN

/**
 * @brief The one table of status codes: X(NAME, value, "text") per code.
 *
 * Everything that names a status is generated from this list (libuv's
 * UV_ERRNO_MAP pattern): the aims_status enum below, aims_strerror() (the
 * text column), aims_status_name() (the NAME column as a string) and, at run
 * time through aims_status_name(), the Python binding's exception classes.
 * A host may expand it too, e.g. to build its own switch over every code.
 * Rows are append-only: a value is never renumbered, reused or removed.
 *
 * The comment on each row is the code's documentation.
 * @since 0.1
 */
#define AIMS_STATUS_MAP(X)                                                                 \
    /* success */                                                                          \
    X(AIMS_OK, 0, "ok")                                                                    \
    /* API misuse: NULL handle, wrong handle type, destroyed or borrowed handle */          \
    X(AIMS_E_MISUSE, 1, "API misuse")                                                      \
    /* an allocation failed */                                                             \
    X(AIMS_E_NOMEM, 2, "out of memory")                                                    \
    /* an argument or parameter value is invalid */                                        \
    X(AIMS_E_INVAL, 3, "invalid argument")                                                 \
    /* a value or buffer size is out of range / too small */                               \
    X(AIMS_E_RANGE, 4, "out of range")                                                     \
    /* input bytes are malformed, truncated or fail a checksum */                          \
    X(AIMS_E_CORRUPT, 5, "corrupt input")                                                  \
    /* an operating-system I/O call failed */                                              \
    X(AIMS_E_IO, 6, "I/O error")                                                           \
    /* format, version or parameter not supported by this build */                         \
    X(AIMS_E_UNSUPPORTED, 7, "unsupported")                                                \
    /* a named thing (file, parameter, section) does not exist */                          \
    X(AIMS_E_NOTFOUND, 8, "not found")                                                     \
    /* the object is not in a state that allows the call (e.g. not fitted) */              \
    X(AIMS_E_STATE, 9, "invalid state")                                                    \
    /* a dependency (BLAS, zstd, OS threads) reported a failure */                         \
    X(AIMS_E_BACKEND, 10, "backend failure")                                               \
    /* the operation was cancelled */                                                      \
    X(AIMS_E_CANCELLED, 11, "cancelled")                                                   \
    /* a deadline passed */                                                                \
    X(AIMS_E_TIMEOUT, 12, "timed out")                                                     \
    /* a bounded queue or limit is full; retry later */                                    \
    X(AIMS_E_OVERLOADED, 13, "overloaded")                                                 \
    /* the object or connection is closed */                                               \
    X(AIMS_E_CLOSED, 14, "closed")                                                         \
    /* the thing being created already exists */                                           \
    X(AIMS_E_EXISTS, 15, "already exists")                                                 \
    /* an internal invariant failed; please report */                                      \
    X(AIMS_E_INTERNAL, 16, "internal error")                                               \
    /* refused: the caller lacks the secret, identity or policy permission */              \
    X(AIMS_E_DENIED, 17, "permission denied")

/** Expands one AIMS_STATUS_MAP row into an enumerator (internal to this header). */
#define AIMS_STATUS_ENUM_ROW_(name, value, text) name = value,

/**
 * @brief Status code returned by every fallible libaims call (0 = success).
 * The codes, their values and their meaning are the rows of AIMS_STATUS_MAP.
 * Values never change.
 * @since 0.1
 */
typedef enum aims_status { AIMS_STATUS_MAP(AIMS_STATUS_ENUM_ROW_) } aims_status;

/**
 * @brief Static English text for a status code (the text column of AIMS_STATUS_MAP).
 * @param code Any value; unknown codes give "unknown status".
 * @return A string with static storage; never NULL.
 * @note Thread safety: safe from any thread.
 * @since 0.1
 */
AIMS_API const char *aims_strerror(aims_status code);

/**
 * @brief The C name of a status code: "AIMS_OK", "AIMS_E_NOMEM", ...
 *
 * Bindings use it to build their error types from the library at run time
 * instead of copying the table (walk codes from 0 upwards and skip NULLs).
 * @param code Any value.
 * @return A string with static storage, or NULL when @p code is not a status
 *         this library knows (a newer code than the library, or garbage), so a
 *         caller can tell "unknown" from every real name. Do not pass the
 *         result to printf("%s") unchecked.
 * @note Thread safety: safe from any thread.
 * @since 0.1
 */
AIMS_API const char *aims_status_name(aims_status code);

/**
 * @brief Detail text of the most recent failure on the calling thread.
 *
 * Set by every failing libaims call on this thread (constructors, loaders and
 * const calls included). Successful calls do not clear it.
 * @return A thread-local string, valid until the next failing call on this
 *         thread; "" when nothing failed yet. Never NULL.
 * @note Thread safety: each thread sees its own message.
 * @since 0.1
 */
AIMS_API const char *aims_errmsg(void);

/* ------------------------------------------------------------------------ */
/* Versions                                                                   */

/**
 * @brief Run-time library version as M*10000 + m*100 + p.
 * Compare with AIMS_VERSION_NUMBER to detect header/library mismatch.
 * @since 0.1
 */
AIMS_API unsigned aims_version_number(void);

/** @brief Run-time version string "M.m.p"; static storage. @since 0.1 */
AIMS_API const char *aims_version_string(void);

/**
 * @brief Build information as one line of JSON with static storage, e.g.
 * {"version":"0.1.0","blas":"OpenBLAS 0.3.21 ...","blas_threads":2,"zstd":"1.5.4",...}.
 * Reports the BLAS core and thread model and the zstd version the library runs with,
 * and (since 0.1, session 12) "kernels": which of libaims' own CPU-specific kernels this
 * process picks on this CPU: {"gemm_f32":"own"|"openblas","gemm_bf16":"own"|"openblas",
 * "smax_step":"own"|"off","int8":"vnni"|"avx2"|"c"} ("openblas" for gemm_bf16: precision 1
 * trains in fp32). Benchmarks record it beside their figures.
 * @note Thread safety: safe from any thread; the string is built once.
 * @since 0.1
 */
AIMS_API const char *aims_build_info(void);

/* ------------------------------------------------------------------------ */
/* Memory                                                                     */

/** Allocation function: like malloc(size); returns NULL on failure. */
typedef void *(*aims_malloc_fn)(void *user, size_t size);
/** Reallocation function: like realloc(ptr, size); NULL ptr means malloc. */
typedef void *(*aims_realloc_fn)(void *user, void *ptr, size_t size);
/** Release function: like free(ptr); must accept NULL. */
typedef void (*aims_free_fn)(void *user, void *ptr);

/**
 * @brief Route every allocation libaims makes through the host's functions.
 *
 * Pass three NULL functions to restore the C library's malloc/realloc/free.
 * zstd's working memory goes through the hook too; OpenBLAS's internal buffers
 * do not (OpenBLAS offers no hook).
 * @return AIMS_OK; AIMS_E_INVAL if only some functions are NULL; AIMS_E_STATE
 *         if libaims still holds memory from the previous allocator.
 * @note Thread safety: start-up only; not safe concurrently with any libaims call.
 * @since 0.1
 */
AIMS_API aims_status aims_set_allocator(aims_malloc_fn malloc_fn, aims_realloc_fn realloc_fn,
                                        aims_free_fn free_fn, void *user);

/**
 * @brief Number of blocks libaims currently holds (allocated and not yet freed).
 * Tests use it to prove that every object released everything.
 * @since 0.1
 */
AIMS_API size_t aims_alloc_live(void);

/**
 * @brief Release memory that libaims allocated for the caller. NULL is a no-op.
 * @since 0.1
 */
AIMS_API void aims_free(void *ptr);

/* ------------------------------------------------------------------------ */
/* Logging                                                                    */

/** Severity of a log record; a sink receives records at or above its minimum. */
typedef enum aims_log_level {
    AIMS_LOG_DEBUG = 10,  /**< detail for developers (every error text set) */
    AIMS_LOG_INFO = 20,   /**< normal operation worth a line (recoveries) */
    AIMS_LOG_WARN = 30,   /**< something was refused or degraded; service goes on */
    AIMS_LOG_ERROR = 40,  /**< a failure an operator must see (bind, load, registry) */
    AIMS_LOG_OFF = 100    /**< as a minimum level: no records at all */
} aims_log_level;

/** Log callback: @p msg is valid only during the call. May be called from any thread. */
typedef void (*aims_log_fn)(void *user, aims_log_level level, const char *msg);

/**
 * @brief Install the log callback and the lowest level passed to it.
 * @param fn        Callback, or NULL to discard all log records (the default).
 * @param user      Passed back to @p fn unchanged.
 * @param min_level Records below this level are dropped before formatting.
 * @return AIMS_OK or AIMS_E_INVAL for an unknown level.
 * @note Thread safety: start-up only. The callback itself must be thread-safe.
 * @since 0.1
 */
AIMS_API aims_status aims_set_log(aims_log_fn fn, void *user, aims_log_level min_level);

/* ------------------------------------------------------------------------ */
/* Parameters                                                                 */

/**
 * Parameter identifiers, one enum for every object that takes parameters.
 * Values are explicit and append-only; each range belongs to one object:
 *   100..199  loader options (aims_loadopts)
 *   200..299  pipeline step parameters (aims_pipeline_set_step_*)
 *   300..399  pipeline-wide parameters (aims_pipeline_set_param_*)
 *   400..499  model parameters (aims_model_set_param_*)
 *   500..599  trainer parameters (aims_trainer_set_param_*)
 *   600..699  health parameters (aims_health_set_param_i64)
 *   700..719  node parameters (aims_node_set_param_i64)
 *   720..739  service parameters (aims_service_set_param_i64)
 *   740..759  client parameters (aims_client_set_param_*)
 * aims_param_info() gives type, bounds and default of each; aims_param_by_name()
 * maps the lower-case name shown in brackets to the identifier (for bindings).
 */
typedef enum aims_param {
    /* --- loader options ---------------------------------------------------- */
    AIMS_LOAD_DELIMITER = 100,      /**< [delimiter] i64: CSV field separator byte; default ',' */
    AIMS_LOAD_HEADER = 101,         /**< [header] i64: CSV first line: 0 data, 1 column names, 2 skip; default 0 */
    AIMS_LOAD_LABEL_COLUMN = 102,   /**< [label_column] i64: CSV label column, -1 none, -2 last; default -1 */
    AIMS_LOAD_LABEL_KIND = 103,     /**< [label_kind] i64: 0 class ids (int), 1 float targets; default 0 */
    AIMS_LOAD_MISSING = 104,        /**< [missing] i64: empty/NA CSV field: 0 error, 1 NaN; default 1 */
    AIMS_LOAD_MAX_ROWS = 105,       /**< [max_rows] i64: stop after this many rows, 0 = all; default 0 */
    AIMS_LOAD_MAX_BYTES = 106,      /**< [max_bytes] i64: refuse inputs larger than this; default 4 GiB */
    AIMS_LOAD_NUM_FEATURES = 107,   /**< [num_features] i64: svmlight width, 0 = infer; default 0 */
    AIMS_LOAD_MIN_DOCS = 108,       /**< [min_docs] i64: topics dir: skip topics with fewer entries; default 20 */
    AIMS_LOAD_ZERO_BASED = 109,     /**< [zero_based] i64: svmlight indices start at 0 (1) or 1 (0); default 0 */
    AIMS_LOAD_SKIP_ROWS = 110,      /**< [skip_rows] i64: CSV lines to skip before the header/data; default 0 */
    AIMS_LOAD_NONFINITE = 111,      /**< [allow_nonfinite] i64: numbers that are not finite -- nan, inf, or a literal beyond float range such as 1e999 -- in CSV/svmlight fields and dense datasets: 0 an error naming file, line and column (row and column for memory); 1 keep them (NaN/inf reach the dataset; an IMPUTE step with nonfinite = 1 can then replace them). Missing markers (empty, NA, ?) follow AIMS_LOAD_MISSING instead; @since 0.1; default 0 */

    /* --- pipeline step parameters ------------------------------------------ */
    AIMS_STEP_COL_BEGIN = 200,      /**< [col_begin] i64: first column the step touches; default 0 */
    AIMS_STEP_COL_END = 201,        /**< [col_end] i64: one past the last column, -1 = all; default -1 */
    AIMS_STEP_LOW = 202,            /**< [low] f64: clip low bound / min-max target low; default 0 (clip: -inf) */
    AIMS_STEP_HIGH = 203,           /**< [high] f64: clip high bound / min-max target high; default 1 (clip: +inf) */
    AIMS_STEP_STRATEGY = 204,       /**< [strategy] i64: 0 mean, 1 median, 2 constant; default 0 */
    AIMS_STEP_VALUE = 205,          /**< [value] f64: impute constant, finite; default 0 */
    AIMS_STEP_FACTOR = 206,         /**< [factor] f64: scale step multiplier, finite (|factor| <= FLT_MAX); default 1/255 */
    AIMS_STEP_MAX_CATEGORIES = 207, /**< [max_categories] i64: one-hot cap on categories per column; default 1024 */
    AIMS_STEP_LOWERCASE = 208,      /**< [lowercase] i64: normalize: lower-case ASCII; default 1 */
    AIMS_STEP_MIN_TOKEN_LEN = 209,  /**< [min_token_len] i64: tokenize: shortest token kept; default 2 */
    AIMS_STEP_NGRAM_MAX = 210,      /**< [ngram_max] i64: ngrams: longest word n-gram; default 2 */
    AIMS_STEP_BUCKETS = 211,        /**< [buckets] i64: hash: number of buckets; default 2^18 */
    AIMS_STEP_SIGNED = 212,         /**< [signed] i64: hash: sign from the hash bit (sklearn alternate_sign); default 0 */
    AIMS_STEP_SMOOTH_IDF = 213,     /**< [smooth_idf] i64: tfidf: idf = ln((1+n)/(1+df))+1; default 1 */
    AIMS_STEP_SUBLINEAR_TF = 214,   /**< [sublinear_tf] i64: tfidf: tf = 1+ln(tf); default 0 */
    AIMS_STEP_NORM = 215,           /**< [norm] i64: tfidf row norm: 0 none, 1 l1, 2 l2; default 2 */
    AIMS_STEP_NONFINITE = 216,      /**< [nonfinite] i64: numeric steps on NaN/inf input: 0 error, 1 pass through; default 0 */
    AIMS_STEP_PUNCT = 217,          /**< [punct] i64: tokenize: 1 keeps every ASCII punctuation character (! " # ... ~ except '_') as a token of its own, as fastText's tutorial splits punctuation off words ("don't!" -> don ' t !); such tokens are kept whatever min_token_len; 0 treats punctuation as a separator (scikit-learn's default). On the fortunes topics 1 adds ~6 pp of accuracy (docs/text-training.md); @since 0.1; default 0 */

    /* --- pipeline-wide parameters ------------------------------------------ */
    AIMS_PIPELINE_THREADS = 300,    /**< [threads] i64: worker threads for transform, 0 = cores; default 1 */

    /* --- model parameters (aims_model_set_param_*) -------------------------- */
    AIMS_MODEL_DROPOUT = 400,       /**< [dropout] f64: drop probability on hidden layers while training; default 0 */
    AIMS_MODEL_LOSS = 401,          /**< [loss] i64: 0 auto (classes: cross-entropy, targets: MSE), 1 cross-entropy, 2 MSE, 3 one-vs-rest hinge (TEXT models only: each class score is pushed to >= +1 for its class and <= -1 for the others, as scikit-learn's SGDClassifier default; probabilities are the softmax of the scores); default 0 */
    AIMS_MODEL_EMBED_DIM = 402,     /**< [embed_dim] i64: TEXT embedding width; default 50 */
    AIMS_MODEL_THREADS = 403,       /**< [model_threads] i64: threads for predict/evaluate, 0 = cores; default 1 */
    AIMS_MODEL_PRECISION = 404,     /**< [precision] i64: operands of the big training GEMMs (m n k >= 262144, at least 8 outputs): 0 fp32; 1 bf16-rounded operands with fp32 sums in libaims' own AVX512_BF16 kernel (mixed precision: master weights, optimizer state and activations stay fp32). 1 needs AIMS_TRAIN_GEMM = 0 and a CPU with AVX512_BF16, else training runs in fp32. Prediction is always fp32 (or int8 after quantization); default 0 */
    AIMS_MODEL_TEXT_LINEAR = 405,   /**< [text_linear] i64: TEXT only. 0: fastText style, the mean of the tokens' embed_dim-wide embeddings feeds a dense layer. 1: a linear model over the bag of tokens, no embedding: each token id has one weight per class and the scores are the SUM over the document's tokens of token weight x weight row, plus a bias (embed_dim is ignored and reads back as the class count once the structure is final; weights start at 0; at most 4096 classes). A sum, not a mean, so give it length-normalised token weights: a TFIDF step (l2 norm) makes it scikit-learn's hashing + TF-IDF + linear classifier; default 0 */

    /* --- trainer parameters (aims_trainer_set_param_*) ---------------------- */
    AIMS_TRAIN_OPTIMIZER = 500,     /**< [optimizer] i64: 0 SGD (momentum), 1 Adam, 2 AdamW; default 0 */
    AIMS_TRAIN_LR = 501,            /**< [lr] f64: base learning rate; default 0.1 */
    AIMS_TRAIN_MOMENTUM = 502,      /**< [momentum] f64: SGD momentum; default 0.9 */
    AIMS_TRAIN_NESTEROV = 503,      /**< [nesterov] i64: Nesterov momentum; default 0 */
    AIMS_TRAIN_BETA1 = 504,         /**< [beta1] f64: Adam beta1; default 0.9 */
    AIMS_TRAIN_BETA2 = 505,         /**< [beta2] f64: Adam beta2; default 0.999 */
    AIMS_TRAIN_EPS = 506,           /**< [eps] f64: Adam epsilon; default 1e-8 */
    AIMS_TRAIN_WEIGHT_DECAY = 507,  /**< [weight_decay] f64: L2 (SGD, Adam) or decoupled (AdamW); default 0 */
    AIMS_TRAIN_SCHEDULE = 508,      /**< [schedule] i64: 0 constant, 1 step, 2 cosine; default 0 */
    AIMS_TRAIN_WARMUP_STEPS = 509,  /**< [warmup_steps] i64: linear warm-up steps; default 0 */
    AIMS_TRAIN_STEP_EPOCHS = 510,   /**< [step_epochs] i64: step schedule period in epochs; default 10 */
    AIMS_TRAIN_GAMMA = 511,         /**< [gamma] f64: step schedule factor; default 0.1 */
    AIMS_TRAIN_BATCH = 512,         /**< [batch] i64: mini-batch rows; default 128 */
    AIMS_TRAIN_EPOCHS = 513,        /**< [epochs] i64: maximum epochs; default 5 */
    AIMS_TRAIN_SEED = 514,          /**< [seed] i64: weight init, shuffling, dropout, held-out split; default 1 */
    AIMS_TRAIN_THREADS = 515,       /**< [train_threads] i64: compute threads of libaims' own training GEMMs (see gemm), 0 = cores; default 0 */
    AIMS_TRAIN_VAL_FRACTION = 516,  /**< [val_fraction] f64: held-out share when no validation set is given; default 0 */
    AIMS_TRAIN_PATIENCE = 517,      /**< [patience] i64: epochs without improvement before stopping, 0 = off; default 0 */
    AIMS_TRAIN_MIN_DELTA = 518,     /**< [min_delta] f64: smallest improvement that counts; default 0 */
    AIMS_TRAIN_METRIC = 519,        /**< [metric] i64: early-stopping metric: 0 validation loss, 1 validation accuracy; default 0 */
    AIMS_TRAIN_WARM_START = 520,    /**< [warm_start] i64: keep existing weights at begin; default 0 */
    AIMS_TRAIN_GEMM = 521,          /**< [gemm] i64: GEMM back end of dense training: 0 auto -- libaims' own kernels (fp32 FMA with AVX-512 or AVX2+FMA, the same bits on both; bf16 with precision 1 where the CPU has AVX512_BF16) on train_threads threads when the CPU has AVX-512 or AVX2+FMA, else OpenBLAS; 1 OpenBLAS always (fp32, on OpenBLAS's own threads; precision 1 then trains in fp32). Results of the own kernels do not depend on the thread count; @since 0.1; default 0 */
    AIMS_TRAIN_AVERAGE = 522,       /**< [average] i64: TEXT only: averaged SGD (ASGD) -- the trained model is the mean of the weights after every step of the last N epochs (0 = off: the last weights). Costs one more float per parameter while training; not part of a checkpoint (a resumed run averages from where it resumes); ignored with early stopping (patience > 0), which keeps its best epoch instead. See docs/text-training.md; @since 0.1; default 0 */

    /* --- health parameters (aims_health_set_param_i64) ---------------------- */
    AIMS_HEALTH_FAILURES = 600,         /**< [failures] i64: consecutive failures that eject; default 5 */
    AIMS_HEALTH_EJECT_MS = 601,         /**< [eject_ms] i64: base ejection time (x times ejected); default 30000 */
    AIMS_HEALTH_MAX_EJECT_MS = 602,     /**< [max_eject_ms] i64: ejection time cap; default 300000 */
    AIMS_HEALTH_MAX_EJECTED_PCT = 603,  /**< [max_ejected_pct] i64: most instances ejected at once, % (>= 1 instance); default 10 */
    AIMS_HEALTH_PANIC_PCT = 604,        /**< [panic_pct] i64: panic below this % healthy; default 50 */

    /* --- node parameters (aims_node_set_param_i64) -------------------------- */
    AIMS_NODE_WORKERS = 700,            /**< [workers] i64: worker threads running services, 0 = cores; default 2 */
    AIMS_NODE_MAX_FRAME = 701,          /**< [max_frame] i64: largest frame accepted or sent, bytes; default 64 MiB */
    AIMS_NODE_CONN_INFLIGHT = 702,      /**< [conn_inflight] i64: requests in flight per connection; default 256 */
    AIMS_NODE_HEARTBEAT_MS = 703,       /**< [heartbeat_ms] i64: lease renewal period (lease = 3 periods); default 1000 */
    AIMS_NODE_INSECURE = 704,           /**< [insecure] i64: allow plain tcp:// on non-loopback addresses; default 0 */
    AIMS_NODE_DRAIN_MS = 705,           /**< [drain_ms] i64: longest drain when the node is destroyed; default 5000 */
    AIMS_NODE_DRAIN_GRACE_MS = 706,     /**< [drain_grace_ms] i64: wait after leaving the registry before refusing work; default 0 = 2 heartbeats */
    /* Receive bounds against slow and partial senders (tcp://, ipc://; before the
     * first listen). A peer slower than these is dropped at most rx_header_ms + 1 s
     * (header) or 5 s (rate: two 2 s windows + the 1 s sweep) after it slowed down;
     * bytes held for frames in progress stay under rx_budget + 64 KiB x connections.
     * A frame whose read buffer would overdraw rx_budget is read no further: its
     * connection stops being read (the sender's socket fills and blocks it) until
     * budget frees -- paused connections resume in the order they paused as soon
     * as a frame or connection of the same transport gives budget back (budget
     * freed by another transport of the node: at the 1 s sweep) -- and is dropped
     * when it waited more than rx_pause_ms (at most rx_pause_ms + 1 s after it
     * paused). So big frames are read into memory only as fast as the budget
     * allows. docs/OVERLOAD.md.
     * @since 0.1 */
    AIMS_NODE_RX_MIN_RATE = 715,        /**< [rx_min_rate] i64: bytes/s a frame in progress must keep up over each 2 s window, 0 = off; default 1024 */
    AIMS_NODE_RX_HEADER_MS = 716,       /**< [rx_header_ms] i64: first byte of a frame to its complete 44-byte header, 0 = off; default 2000 */
    AIMS_NODE_RX_BUDGET = 717,          /**< [rx_budget] i64: node-wide bytes of read buffer (above 64 KiB per connection) for frames in progress; a frame that would overdraw it pauses its connection (rx_pause_ms); 0 = off; default 256 MiB */
    AIMS_NODE_RX_PAUSE_MS = 718,        /**< [rx_pause_ms] i64: longest a connection paused for rx_budget waits for budget before it is dropped, 0 = drop at once; default 5000 */

    /* --- service parameters (aims_service_set_param_i64) -------------------- */
    AIMS_SERVICE_CONCURRENCY = 720,     /**< [concurrency] i64: handlers running at once, 0 = node workers; default 0 */
    AIMS_SERVICE_QUEUE_CAP = 721,       /**< [queue_cap] i64: requests waiting before AIMS_E_OVERLOADED; default 1024 */
    AIMS_SERVICE_BATCH_MAX = 722,       /**< [batch_max] i64: infer: most rows joined into one predict; default 64 */
    AIMS_SERVICE_BATCH_DELAY_US = 723,  /**< [batch_delay_us] i64: infer: longest wait for a batch to fill; default 200 */
    AIMS_SERVICE_INLINE = 724,          /**< [inline] i64: run inproc calls on the caller's thread when a slot is free; default 1 */
    AIMS_SERVICE_WEIGHT = 725,          /**< [weight] i64: registry weight 1..10000; default 100 */
    /* Overload behaviour (docs/OVERLOAD.md). The adaptive concurrency limit bounds
     * requests queued + running by a gradient rule on their sojourn time: while it
     * stays within climit_tolerance_pct % of the no-load run time the limit grows,
     * past it the limit shrinks in proportion (a one-at-a-time service settles at
     * about 4 with the default). lifo = 1 serves the newest request first once the
     * queue has not been empty for 100 ms, admits by the deadline alone, and drops
     * (AIMS_E_OVERLOADED with a retry hint) what waited past the overload target
     * (max(50 ms, 4 runs)); the default FIFO refuses at arrival instead, which kept
     * the p99 of a rejection under 1 ms where LIFO gave 75-130 ms. @since 0.1 */
    AIMS_SERVICE_CLIMIT_TOLERANCE_PCT = 736, /**< [climit_tolerance_pct] i64: adaptive limit: sojourn up to this % of the no-load run time is no queueing; 0 = adaptive limit off (queue_cap, the deadline and the overload target bound the queue); default 200 */
    AIMS_SERVICE_LIFO = 737,            /**< [lifo] i64: 1 = LIFO serving + drop after the overload target under sustained overload; default 0 (FIFO, refusal at arrival) */

    /* --- client parameters (aims_client_set_param_*) ------------------------ */
    AIMS_CLIENT_TIMEOUT_MS = 740,       /**< [timeout_ms] i64: default call deadline; default 10000 */
    AIMS_CLIENT_RETRY_BUDGET = 741,     /**< [retry_budget] f64: retries as a share of recent calls (10 s window); default 0.2 */
    AIMS_CLIENT_RETRY_MIN = 742,        /**< [retry_min] i64: retries per second always allowed; default 10 */
    AIMS_CLIENT_MAX_ATTEMPTS = 743,     /**< [max_attempts] i64: attempts per call incl. the first; default 3 */
    AIMS_CLIENT_LB_POLICY = 744,        /**< [lb_policy] i64: aims_lb_policy; default 1 (P2C) */
    AIMS_CLIENT_MAX_PENDING = 745,      /**< [max_pending] i64: calls in flight before AIMS_E_OVERLOADED; default 4096 */
    AIMS_CLIENT_SYNC_MS = 746,          /**< [sync_ms] i64: remote registry sync period; default 200 */
    AIMS_CLIENT_BACKOFF_MS = 747,       /**< [backoff_ms] i64: first reconnect backoff (doubles, <= 32x); default 50 */
    AIMS_CLIENT_HEDGE_MS = 757,         /**< [hedge_ms] i64: idempotent sync calls send a second copy to another instance after this many ms without a reply; 0 = the service's recent p95 in this client (at most 2x its median); -1 = off (default); docs/CANCEL.md */
    AIMS_CLIENT_MAX_FRAME = 748         /**< [client_max_frame] i64: largest frame the client sends or accepts, bytes; set before the first call; default 64 MiB */,

    /* --- HTTP front door parameters (aims_http_set_param_i64) -------------- */
    AIMS_HTTP_MAX_CONNECTIONS = 780,    /**< [http_max_connections] i64: open connections at once (more wait in the listen backlog); default 1024 */
    AIMS_HTTP_MAX_BODY = 781,           /**< [http_max_body] i64: largest request body, bytes (bigger: 413); default 16 MiB */
    AIMS_HTTP_MAX_HEADER = 782,         /**< [http_max_header] i64: per-connection buffer for request line + headers, bytes (bigger: 431); default 32 KiB */
    AIMS_HTTP_IDLE_TIMEOUT_S = 783,     /**< [http_idle_timeout_s] i64: close a connection idle (or trickling) this long; default 30 */
    AIMS_HTTP_THREADS = 784,            /**< [http_threads] i64: event-loop threads; default 2 */
    AIMS_HTTP_INSECURE = 785,           /**< [http_insecure] i64: allow a non-loopback listen address (plain HTTP); default 0 */
    AIMS_HTTP_TIMEOUT_MS = 786          /**< [http_timeout_ms] i64: deadline of an infer request; default 10000 */
} aims_param;

/** Value type of a parameter. */
typedef enum aims_param_type {
    AIMS_PARAM_TYPE_I64 = 1,
    AIMS_PARAM_TYPE_F64 = 2
} aims_param_type;

/**
 * @brief Describe a parameter.
 * @param param      Identifier.
 * @param out_type   [out] optional: value type.
 * @param out_min    [out] optional: smallest accepted value.
 * @param out_max    [out] optional: largest accepted value.
 * @param out_def    [out] optional: default value.
 * @return AIMS_OK, or AIMS_E_NOTFOUND for an unknown identifier (outputs untouched).
 * @since 0.1
 */
AIMS_API aims_status aims_param_info(aims_param param, aims_param_type *out_type, double *out_min,
                                     double *out_max, double *out_def);

/**
 * @brief Look a parameter up by its lower-case name (the bracketed names above).
 * @return AIMS_OK, AIMS_E_MISUSE for NULL arguments, AIMS_E_NOTFOUND for an unknown name.
 * @since 0.1
 */
AIMS_API aims_status aims_param_by_name(const char *name, aims_param *out_param);

/** @brief Name of a parameter, or NULL if unknown. Static storage. @since 0.1 */
AIMS_API const char *aims_param_name(aims_param param);

AIMS_EXTERN_C_END

#endif /* AIMS_CORE_H */
