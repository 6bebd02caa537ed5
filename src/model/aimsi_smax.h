/*
 * aimsi_smax.h -- private to the softmax step's files: train_smax.c (the step:
 * batch groups, the meeting point, the update, the compact copy's life) and
 * its per-ISA group kernels, train_smax_avx512.c and train_smax_avx2.c (a
 * group's logits, softmax, loss gradient and share of the weight gradient).
 *
 * The kernels are compiled with target attributes, so the library still
 * builds for (and runs on) any x86-64: train_smax.c picks one table below
 * from __builtin_cpu_supports, once, and never calls the other. Code under
 * the AVX-512 attributes raises SIGILL on an AVX2 CPU.
 */
#ifndef AIMSI_SMAX_H
#define AIMSI_SMAX_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "aimsi_train.h"

/* SMAX_GROUPS: fixed parts of a batch (whatever the thread count: the bits do
 * not depend on it). SMAX_AHEAD: pairs of rows whose lines are prefetched
 * (into L2: the L2 keeps more misses in flight than L1; random rows of a
 * 188 MB dataset come from DRAM, and a step of softmax regression is bound by
 * them). */
enum { SMAX_GROUPS = 2, SMAX_KMAX = 16, SMAX_AHEAD = 4 };

/* What a group kernel reads and writes for one batch. */
typedef struct aimsi_smax_ctx {
    const aims_trainer *t;
    const float *x; /* dataset features */
    const uint8_t *xq; /* or their compact copy (NULL: none) */
    float *xb;         /* with xq: the batch's rows decoded, bmax x in */
    float qd;
    uint8_t *qmake;    /* the compact copy to write this batch's rows into (NULL: none) */
    atomic_int *qbad;
    const int32_t *labels;
    size_t in, k;
    const float *w, *b;
    float *g; /* n x k: the loss gradient per row */
    float inv_n;
} aimsi_smax_ctx;

/* One batch group of cnt rows (dataset rows idx[0..cnt)): the loss gradient
 * into g (cnt x k), the group's weight and bias gradient into pw, pb, the
 * summed loss into *loss; xb: the group's rows of the batch block (for the
 * compact copy's decoded rows). */
typedef void (*aimsi_smax_group_fn)(const aimsi_smax_ctx *s, const size_t *idx, size_t cnt,
                                    float *xb, float *g, float *pw, float *pb, double *loss);

typedef struct aimsi_smax_isa {
    const char *name;
    int compact; /* the kernels make and read the u8 copy (ctx xq, qmake) */
    aimsi_smax_group_fn group[SMAX_KMAX + 1]; /* by class count, 2..SMAX_KMAX */
} aimsi_smax_isa;

/* X(K) for every class count a kernel file instantiates (group_K), and the
 * table of those instances by class count. */
#define AIMSI_SMAX_EACH_K(X)                                                                     \
    X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16)
#define AIMSI_SMAX_GROUP_TABLE                                                                   \
    {NULL,     NULL,     group_2,  group_3,  group_4,  group_5,  group_6,  group_7, group_8,     \
     group_9,  group_10, group_11, group_12, group_13, group_14, group_15, group_16}

/* train_smax_avx512.c: AVX-512 F/BW/VL/DQ (16 lanes). */
extern const aimsi_smax_isa aimsi_smax_avx512;
/* train_smax_avx2.c: AVX2 + FMA (8 lanes); other bits than the AVX-512
 * kernels' (other sum orders), the same bits for every thread count. */
extern const aimsi_smax_isa aimsi_smax_avx2;

#if defined(__GNUC__) && defined(__x86_64__) && (__GNUC__ >= 10 || defined(__clang__))
#define AIMSI_HAVE_SMAX 1
#include <immintrin.h>

#define SMAX_HINT _MM_HINT_T1
#define SMAX_INLINE static inline __attribute__((always_inline))

/* Every line of a row of `bytes` bytes into L2 (the first line and then one
 * per 64 bytes, plus the last: rows need not start on a line). SSE only: any
 * x86-64 runs it. */
static inline void aimsi_smax_prefetch_row(const void *r, size_t bytes)
{
    const char *c = r;
    for (size_t j = 0; j < bytes; j += 64) {
        _mm_prefetch(c + j, SMAX_HINT);
    }
    _mm_prefetch(c + bytes - 1, SMAX_HINT);
}

/* A group's pair of float rows r, r + 1 (x1 = x0 for a last single row) and
 * the pair SMAX_AHEAD pairs on, whose lines to prefetch meanwhile (p0 NULL:
 * none). */
typedef struct aimsi_smax_pair {
    const float *x0, *x1, *p0, *p1;
} aimsi_smax_pair;

static inline aimsi_smax_pair aimsi_smax_pair_at(const float *x, const size_t *idx, size_t cnt,
                                                 size_t in, size_t r)
{
    aimsi_smax_pair p = {x + idx[r] * in, NULL, NULL, NULL};
    p.x1 = r + 1 < cnt ? x + idx[r + 1] * in : p.x0;
    if (r + 2 * SMAX_AHEAD < cnt) { /* SMAX_AHEAD pairs ahead */
        p.p0 = x + idx[r + 2 * SMAX_AHEAD] * in;
        p.p1 = r + 2 * SMAX_AHEAD + 1 < cnt ? x + idx[r + 2 * SMAX_AHEAD + 1] * in : p.p0;
    }
    return p;
}

/* The lines of a group's first SMAX_AHEAD pairs of float rows. */
static inline void aimsi_smax_prefetch_first(const float *x, const size_t *idx, size_t cnt,
                                             size_t in)
{
    for (size_t r = 0; r < cnt && r < 2 * SMAX_AHEAD; r++) {
        aimsi_smax_prefetch_row(x + idx[r] * in, in * sizeof *x);
    }
}

#endif

#endif
