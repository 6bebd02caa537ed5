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

#ifdef AIMSI_HAVE_OWN_GEMM
/* gemm_avx2.c: pack panel p of an fp32 B into `panel` (unless it is read in
 * place or ready), then C rows [i0, i1) x the panel's columns, epilogue
 * included -- gemm.c's sweep for CPUs with AVX2 and FMA but no AVX-512.
 * Call only when the CPU has AVX2 and FMA. */
void aimsi_gemm_avx2_sweep(const gemm_job *g, size_t p, uint32_t *panel, size_t i0, size_t i1);
#endif

#endif /* AIMSI_GEMM_H */
