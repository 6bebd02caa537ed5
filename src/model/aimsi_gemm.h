/*
 * aimsi_gemm.h -- what the own GEMM's files share (gemm.c: the AVX-512
 * kernels, the work split and the entry points; gemm_avx2.c: the AVX2+FMA
 * kernel). Internal to those files: the rest of the library sees only
 * aimsi_model.h's aimsi_gemm_own_* API.
 *
 * The packed layout is one for every ISA: B in panels of NR = 32 columns,
 * slot kk of a panel = its 32 columns side by side (columns past n zero),
 * so the work split, the in-place B, the ready panels (aimsi_gemm_pre.bpk)
 * and the update's panels (aimsi_gemm_epi.wpk) mean the same thing for both
 * kernels; only the register blocking inside a panel differs.
 */
#ifndef AIMSI_GEMM_H
#define AIMSI_GEMM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "aimsi_model.h"

#if defined(__GNUC__) && defined(__x86_64__) && (__GNUC__ >= 10 || defined(__clang__))
#define AIMSI_HAVE_OWN_GEMM 1
#endif

enum { MR = 8, NR = 32 };

enum { GEMM_MAX_SLOTS = 16 };
typedef struct gemm_job {
    int prec, trans_b;
    int avx2;           /* 1: the AVX2+FMA kernel (fp32 only), 0: AVX-512 */
    size_t m, n, k, ks; /* ks: slots along k */
    const void *a;      /* fp32: the caller's A; bf16: the packed copy */
    size_t stride_i, stride_k;
    const float *b;
    size_t ldb;
    const uint16_t *b16; /* bf16, trans_b 0: B already rounded (NULL: pack b) */
    size_t ldb16;
    uint32_t *bp; /* panels, ks * NR slots each */
    float beta;
    float *c;
    size_t ldc;
    const aimsi_gemm_epi *epi; /* NULL: none */
    int direct_b; /* full panels read in place (see sweep): fp32 B, or bpr */
    const uint32_t *bpr; /* bf16, trans_b 0: B as pair rows (aimsi_gemm_pre.bp32) */
    size_t ldbpr;
    const uint32_t *bpk; /* trans_b 1: B's panels, ready (aimsi_gemm_pre.bpk) */
    /* panels in `slots` contiguous ranges, range s preferred by CPU s mod slots */
    size_t panels, slots;
    atomic_size_t next[GEMM_MAX_SLOTS]; /* next unclaimed panel of each range */
} gemm_job;

/* Ask for the lines of C (and of the epilogue's w and gate) that rows
 * [i, i + span) (clipped to end) x columns [j0, j0 + cols) will read or
 * write: with a short k (the weight-gradient GEMM sums over one batch) an
 * 8 rows x 32 columns block is ~1 us of compute against up to 48 scattered
 * cache lines of memory. Each kernel asks PREFETCH_BLOCKS blocks ahead. */
enum { PREFETCH_BLOCKS = 2 };
static inline void aimsi_gemm_prefetch(const gemm_job *g, size_t i, size_t end, size_t span,
                                       size_t j0, size_t cols)
{
    const size_t rows = i >= end ? 0 : (end - i >= span ? span : end - i);
    const aimsi_gemm_epi *e = g->epi;
    for (size_t r = 0; r < rows; r++) {
        const float *c = g->c + (i + r) * g->ldc + j0;
        __builtin_prefetch(c, 1);
        __builtin_prefetch(c + cols - 1, 1);
        if (e != NULL && e->w != NULL) {
            const float *w = e->w + (i + r) * e->ldw + j0;
            __builtin_prefetch(w, 1);
            __builtin_prefetch(w + cols - 1, 1);
        }
        if (e != NULL && e->gate != NULL) {
            const float *gt = e->gate + (i + r) * g->ldc + j0;
            __builtin_prefetch(gt, 0);
            __builtin_prefetch(gt + cols - 1, 0);
        }
    }
}

#ifdef AIMSI_HAVE_OWN_GEMM
/* gemm_avx2.c: pack panel p of an fp32 B into `panel` (unless it is read in
 * place or ready), then C rows [i0, i1) x the panel's columns, epilogue
 * included -- gemm.c's sweep for CPUs with AVX2 and FMA but no AVX-512.
 * Call only when the CPU has AVX2 and FMA. */
void aimsi_gemm_avx2_sweep(const gemm_job *g, size_t p, uint32_t *panel, size_t i0, size_t i1);
#endif

#endif /* AIMSI_GEMM_H */
