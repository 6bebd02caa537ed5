/*
 * aimsi_core.h -- internal core services shared by every module in src/.
 *
 * Nothing here is public. Every module may include this header (core is at the
 * bottom of the dependency rule). It provides:
 *   - the allocator hook wrappers (the ONLY way src/ allocates memory);
 *   - the handle header (magic number + error message) and error helpers;
 *   - the log front end, a seeded RNG, a clock, a growable byte buffer,
 *     parameter validation against the table in params.c, and a thread pool.
 */
#ifndef AIMSI_CORE_H
#define AIMSI_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "aims/aims_core.h"

/* ---- memory --------------------------------------------------------------- */

void *aimsi_malloc(size_t size);
void *aimsi_calloc(size_t n, size_t size);   /* overflow-checked, zeroed */
void *aimsi_realloc(void *ptr, size_t size); /* on failure ptr stays valid */
void aimsi_free(void *ptr);
char *aimsi_strdup(const char *s);
char *aimsi_strndup(const char *s, size_t n);
/* Ask the kernel to back a large, freshly allocated block with transparent huge
 * pages (Linux MADV_HUGEPAGE, as numpy does for big arrays). On VMs a 4 KiB page
 * fault can cost more than the work done on the page; with huge pages, filling a
 * 200 MB array went from 0.6 s to 0.02 s here. Advice only: blocks under 8 MiB
 * and kernels without THP are left alone, and nothing changes on failure. */
void aimsi_hint_hugepages(void *p, size_t bytes);
/* a*b with overflow check: returns 0 and sets *out, or -1 on overflow. */
int aimsi_mul_ok(size_t a, size_t b, size_t *out);
/* Room for one more element in a growable array of `elem`-byte items holding
 * n (doubling from `first`): 0 when n < *cap already or after growing *arr and
 * *cap; -1 on overflow or out of memory, *arr and *cap unchanged. */
int aimsi_grow(void **arr, size_t *cap, size_t n, size_t elem, size_t first);

/* ---- handles and errors ---------------------------------------------------- */

#define AIMSI_ERRMSG_CAP 256

/* First member of every public object. `magic` identifies the type and is
 * cleared on destroy so a stale pointer is caught as misuse. */
typedef struct aimsi_obj {
    uint32_t magic;
    char errmsg[AIMSI_ERRMSG_CAP];
} aimsi_obj;

/* Every handle magic, for every module, in one place: X(NAME, value, type).
 * Core knows no other module's types; these are only numbers, kept here so two
 * objects can never share one (errors.c switches over the list, so a duplicate
 * value fails to compile) and so misuse messages can name the type a pointer
 * really is (aimsi_magic_name). Values are ASCII tags, read big-endian. */
#define AIMSI_MAGIC_MAP(X)                          \
    X(DATASET, 0x41445331u, "aims_dataset")         \
    X(LOADOPTS, 0x414c4f31u, "aims_loadopts")       \
    X(PIPELINE, 0x41505031u, "aims_pipeline")       \
    X(MODEL, 0x414d4431u, "aims_model")             \
    X(TRAINER, 0x41545231u, "aims_trainer")         \
    X(EVAL, 0x41455631u, "aims_eval")               \
    X(BUNDLE, 0x41424431u, "aims_bundle")           \
    X(REGISTRY, 0x41524731u, "aims_registry")       \
    X(HEALTH, 0x41484c31u, "aims_health")           \
    X(BALANCER, 0x414c4231u, "aims_balancer")       \
    X(METRICS, 0x414d5831u, "aims_metrics")         \
    X(MSG, 0x414d5347u, "aims_msg")                 \
    X(NODE, 0x414e4f44u, "aims_node")               \
    X(SERVICE, 0x41535643u, "aims_service")         \
    X(CLIENT, 0x41434c54u, "aims_client")

#define AIMSI_MAGIC_ENUM_(name, value, type) AIMSI_MAGIC_##name = value,
enum { AIMSI_MAGIC_MAP(AIMSI_MAGIC_ENUM_) };
#undef AIMSI_MAGIC_ENUM_
/* What aimsi_obj_kill leaves behind (above INT_MAX, so not in the enum). */
#define AIMSI_MAGIC_DEAD 0xdeadbeefu

/* The type a magic belongs to ("aims_node"), or NULL for no known magic. */
const char *aimsi_magic_name(uint32_t magic);
/* What a pointer handed in as a handle really is, for misuse messages: "NULL",
 * "aims_registry", "a destroyed handle" or "not a libaims handle". */
const char *aimsi_obj_what(const void *obj);

void aimsi_obj_init(aimsi_obj *obj, uint32_t magic);
/* Non-zero when obj is non-NULL and carries the magic. */
int aimsi_obj_ok(const void *obj, uint32_t magic);
/* Poison the magic before freeing. */
void aimsi_obj_kill(aimsi_obj *obj);
/* The handle's last error text, or "" when obj is not a live handle of magic:
 * the body of every aims_<object>_errmsg. */
const char *aimsi_obj_errmsg(const void *obj, uint32_t magic);

/* Record a failure: formats the message into the thread-local slot and, when
 * obj is non-NULL, into obj->errmsg; logs it at debug level; returns code.
 * obj is non-const on purpose: const calls pass NULL (thread-local only). */
aims_status aimsi_err(aimsi_obj *obj, aims_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Copy the thread-local message into obj (after a callee failed) and return code. */
aims_status aimsi_err_adopt(aimsi_obj *obj, aims_status code);
/* A "misuse" shortcut: names the function and the bad argument. */
#define AIMSI_MISUSE(what) aimsi_err(NULL, AIMS_E_MISUSE, "%s: %s", __func__, (what))

/* Propagate a failing status. */
#define AIMSI_TRY(expr)                         \
    do {                                        \
        aims_status aimsi_try_rc_ = (expr);     \
        if (aimsi_try_rc_ != AIMS_OK) {         \
            return aimsi_try_rc_;               \
        }                                       \
    } while (0)

/* ---- logging ----------------------------------------------------------------- */

int aimsi_log_enabled(aims_log_level level);
void aimsi_log(aims_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- parameters -------------------------------------------------------------- */

/* Validate that `param` exists, lies in [range_lo, range_hi] (an object's id
 * range), has `type`, and that `value` is within its bounds. Errors are
 * recorded on obj (may be NULL). */
aims_status aimsi_param_check(aimsi_obj *obj, aims_param param, int range_lo, int range_hi,
                              aims_param_type type, double value);
/* Default value of a known parameter (0 if unknown). */
double aimsi_param_default(aims_param param);

/* Typed parameter storage shared by every object's set/get_param_i64/_f64:
 * a map from parameter to the field of the object's settings that holds it
 * (offset + C type), so each object lists its fields once instead of writing
 * four switch statements. */
enum { AIMSI_FIELD_I64 = 1, AIMSI_FIELD_INT = 2, AIMSI_FIELD_SIZE = 3, AIMSI_FIELD_F64 = 4 };
typedef struct aimsi_param_field {
    aims_param param;
    int ctype; /* AIMSI_FIELD_* */
    size_t offset;
} aimsi_param_field;
typedef struct aimsi_param_map {
    int lo, hi; /* the object's id range */
    const aimsi_param_field *fields;
    size_t n;
} aimsi_param_map;
/* aimsi_param_check (errors on obj) and then the field that holds param;
 * AIMS_E_UNSUPPORTED when the map has none. */
aims_status aimsi_param_field_of(aimsi_obj *obj, const aimsi_param_map *map, aims_param param,
                                 aims_param_type type, double value,
                                 const aimsi_param_field **out);
/* The opening of an aims_<object>_set_param_i64 setter: misuse unless h is a live
 * handle with magic (message names `what` and the calling function), then the
 * checked field of map that holds param into *fp. Returns from the caller on error. */
#define AIMSI_SET_I64_OPEN(h, magic, what, map, param, value, fp)                      \
    do {                                                                              \
        if (!aimsi_obj_ok((h), (magic))) {                                            \
            return AIMSI_MISUSE(what);                                                \
        }                                                                             \
        AIMSI_TRY(aimsi_param_field_of(&(h)->obj, (map), (param), AIMS_PARAM_TYPE_I64, \
                                       (double)(value), (fp)));                        \
    } while (0)
/* Store / load a checked value through a field of the settings at base. */
void aimsi_param_store(void *base, const aimsi_param_field *f, int64_t i, double d);
void aimsi_param_load(const void *base, const aimsi_param_field *f, int64_t *i, double *d);
/* Store every mapped parameter's default (from the table) into its field. */
void aimsi_param_set_defaults(const aimsi_param_map *map, void *base);
/* A getter in one call: check param (type, range) and read its field. */
aims_status aimsi_param_get(const aimsi_param_map *map, const void *base, aims_param param,
                            aims_param_type type, int64_t *i, double *d);

/* ---- secrets from the OS CSPRNG (secret.c) ------------------------------------ */

#define AIMSI_SECRET_BYTES 16u
#define AIMSI_SECRET_HEX 32u
/* Fill buf with n bytes from getrandom(2); AIMS_E_BACKEND if the kernel fails. */
aims_status aimsi_secret_fill(void *buf, size_t n);
/* A fresh 128-bit secret as 32 lowercase hex characters + NUL. */
aims_status aimsi_secret_hex(char out[AIMSI_SECRET_HEX + 1]);
/* 1 when the two byte strings are equal and non-empty; the time taken does not
 * depend on where they differ. */
int aimsi_secret_equal(const char *a, size_t alen, const char *b, size_t blen);

/* ---- RNG: xoshiro256** seeded through splitmix64 -------------------------- */

typedef struct aimsi_rng {
    uint64_t s[4];
} aimsi_rng;

void aimsi_rng_seed(aimsi_rng *rng, uint64_t seed);
uint64_t aimsi_rng_next(aimsi_rng *rng);
/* Uniform integer in [0, n) without modulo bias; n >= 1. */
uint64_t aimsi_rng_below(aimsi_rng *rng, uint64_t n);
/* Uniform double in [0, 1). */
double aimsi_rng_unit(aimsi_rng *rng);

/* ---- clock --------------------------------------------------------------------- */

uint64_t aimsi_now_ns(void); /* CLOCK_MONOTONIC */
/* Absolute CLOCK_MONOTONIC deadline `ms` from now, for pthread_cond_timedwait on a
 * condition variable created with pthread_condattr_setclock(CLOCK_MONOTONIC). */
struct timespec aimsi_mono_after_ms(uint64_t ms);

/* ---- growable byte buffer ------------------------------------------------------ */

typedef struct aimsi_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} aimsi_buf;

void aimsi_buf_init(aimsi_buf *b);
void aimsi_buf_free(aimsi_buf *b);
aims_status aimsi_buf_reserve(aimsi_buf *b, size_t extra); /* room for len+extra */
aims_status aimsi_buf_append(aimsi_buf *b, const void *data, size_t n);
aims_status aimsi_buf_put_u8(aimsi_buf *b, uint8_t v);
aims_status aimsi_buf_put_u32le(aimsi_buf *b, uint32_t v);
aims_status aimsi_buf_put_u64le(aimsi_buf *b, uint64_t v);
aims_status aimsi_buf_put_f64le(aimsi_buf *b, double v);
/* Hand the bytes over (caller frees with aimsi_free) and reset the buffer. */
void *aimsi_buf_take(aimsi_buf *b, size_t *out_len);

/* ---- thread pool ------------------------------------------------------------------ */

typedef struct aimsi_pool aimsi_pool;
/* Task: called once per index in [0, n); ctx is shared. */
typedef void (*aimsi_task_fn)(void *ctx, size_t index);

/* threads == 0 means the number of online cores. */
aims_status aimsi_pool_create(unsigned threads, aimsi_pool **out);
void aimsi_pool_destroy(aimsi_pool *pool);
unsigned aimsi_pool_threads(const aimsi_pool *pool);
/* Run fn(ctx, i) for every i in [0, n) on the pool's threads plus the caller,
 * and return when all are done. Safe to call from several threads at once (the
 * calls are serialised). A NULL pool runs everything on the caller's thread. */
void aimsi_pool_run(aimsi_pool *pool, size_t n, aimsi_task_fn fn, void *ctx);
/* aimsi_pool_run in two halves: _start hands fn over [0, n) to the workers and
 * returns at once (with no workers, it runs every item before returning);
 * _join runs the items no worker took yet on the caller and returns when all
 * are done. Between the two the pool is held: the caller must not run
 * another job on it (that would wait forever), and must join before the
 * job's ctx goes away; the thread that started joins. _join without a
 * pending start of its own does nothing. */
void aimsi_pool_start(aimsi_pool *pool, size_t n, aimsi_task_fn fn, void *ctx);
void aimsi_pool_join(aimsi_pool *pool);
/* Let idle workers (and a caller waiting for them) poll for up to spin_us
 * microseconds before sleeping: for back-to-back short jobs, at the price of
 * burning that much CPU after the last one. 0 (the default) sleeps at once. */
void aimsi_pool_set_spin(aimsi_pool *pool, unsigned spin_us);
/* Online cores (>= 1). */
unsigned aimsi_cpu_count(void);

#endif /* AIMSI_CORE_H */
