/*
 * gemv.c -- y = W x + b for ONE row, on the calling thread: the single-row
 * predict path of fp32 dense layers (model_predict.c).
 *
 * Why its own kernel. At M = 1 a dense layer is a matrix-vector product whose
 * cost is reading W once (784 x 256 fp32 = 784 KB for the first layer of the
 * benchmark MLP): there is nothing to block for, so GEMM's packing is pure
 * overhead, and OpenBLAS threads an sgemv of this size, whose hand-off to its
 * workers costs more than the 200k multiply-adds. A kernel on the calling
 * thread never contends with other predictors and allocates nothing.
 *
 * How (AVX-512, when the CPU has it): eight output rows per pass share each
 * 16-float load of x, so there are 9 loads per 8 FMAs (the floor of a
 * row-major layout is 1 load per FMA) and eight independent FMA chains hide
 * the FMA latency; W is read as eight sequential streams the hardware
 * prefetchers follow. The eight 16-lane sums are folded into eight scalars
 * by one add-and-shuffle tree (512 -> 256 bits, then two rounds of hadd and a
 * lane swap) and the bias is added eight at a time. A tail of in % 16 columns
 * is read with masked loads (nothing past the row is touched); rows past the
 * last multiple of 8 go one at a time. The weights are used as stored
 * (row-major, as trained and saved): a packed copy would have to follow every
 * change of the parameters, and the row-major walk already streams W once.
 * AVX2 + FMA (four rows per pass) and portable C versions serve other CPUs;
 * the choice is made once from __builtin_cpu_supports.
 *
 * Results differ from a batch GEMM only in the order of the sums (a few ulp);
 * every path is deterministic.
 */
#include <stddef.h>

#include "aimsi_model.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define AIMSI_GEMV_X86 1
#include <immintrin.h>

#define GEMV512_TARGET __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define GEMV256_TARGET __attribute__((target("avx2,fma")))

/* Eight 16-lane accumulators -> their eight horizontal sums, in order. */
GEMV512_TARGET static inline __m256 fold8(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 a4,
                                          __m512 a5, __m512 a6, __m512 a7)
{
#define HALVES(a)                                                                               \
    _mm256_add_ps(_mm512_castps512_ps256(a),                                                    \
                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)))
    const __m256 h01 = _mm256_hadd_ps(HALVES(a0), HALVES(a1));
    const __m256 h23 = _mm256_hadd_ps(HALVES(a2), HALVES(a3));
    const __m256 h45 = _mm256_hadd_ps(HALVES(a4), HALVES(a5));
    const __m256 h67 = _mm256_hadd_ps(HALVES(a6), HALVES(a7));
#undef HALVES
    /* q0123: lanes 0-3 the low halves' sums of rows 0-3, lanes 4-7 the high halves' */
    const __m256 q0123 = _mm256_hadd_ps(h01, h23);
    const __m256 q4567 = _mm256_hadd_ps(h45, h67);
    return _mm256_add_ps(_mm256_permute2f128_ps(q0123, q4567, 0x20),
                         _mm256_permute2f128_ps(q0123, q4567, 0x31));
}

#define FMA8(XV, OFF, LD)                                                                      \
    do {                                                                                        \
        a0 = _mm512_fmadd_ps(LD(r + (OFF)), (XV), a0);                                          \
        a1 = _mm512_fmadd_ps(LD(r + in + (OFF)), (XV), a1);                                     \
        a2 = _mm512_fmadd_ps(LD(r + 2 * in + (OFF)), (XV), a2);                                 \
        a3 = _mm512_fmadd_ps(LD(r + 3 * in + (OFF)), (XV), a3);                                 \
        a4 = _mm512_fmadd_ps(LD(r + 4 * in + (OFF)), (XV), a4);                                 \
        a5 = _mm512_fmadd_ps(LD(r + 5 * in + (OFF)), (XV), a5);                                 \
        a6 = _mm512_fmadd_ps(LD(r + 6 * in + (OFF)), (XV), a6);                                 \
        a7 = _mm512_fmadd_ps(LD(r + 7 * in + (OFF)), (XV), a7);                                 \
    } while (0)
#define LD_FULL(p) _mm512_loadu_ps(p)
#define LD_TAIL(p) _mm512_maskz_loadu_ps(tail, (p))

GEMV512_TARGET static void gemv_avx512(const float *w, size_t out, size_t in, const float *x,
                                       const float *b, float *y)
{
    const size_t full = in / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (in - full)) - 1u);
    size_t o = 0;
    for (; o + 8 <= out; o += 8) {
        const float *r = w + o * in;
        __m512 a0 = _mm512_setzero_ps();
        __m512 a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (size_t k = 0; k < full; k += 16) {
            const __m512 xv = _mm512_loadu_ps(x + k);
            FMA8(xv, k, LD_FULL);
        }
        if (full < in) {
            const __m512 xv = _mm512_maskz_loadu_ps(tail, x + full);
            FMA8(xv, full, LD_TAIL);
        }
        _mm256_storeu_ps(y + o, _mm256_add_ps(fold8(a0, a1, a2, a3, a4, a5, a6, a7),
                                              _mm256_loadu_ps(b + o)));
    }
    for (; o < out; o++) {
        const float *r = w + o * in;
        __m512 a = _mm512_setzero_ps();
        for (size_t k = 0; k < full; k += 16) {
            a = _mm512_fmadd_ps(_mm512_loadu_ps(r + k), _mm512_loadu_ps(x + k), a);
        }
        if (full < in) {
            a = _mm512_fmadd_ps(LD_TAIL(r + full), _mm512_maskz_loadu_ps(tail, x + full), a);
        }
        y[o] = _mm512_reduce_add_ps(a) + b[o];
    }
}
#undef FMA8
#undef LD_FULL
#undef LD_TAIL

GEMV256_TARGET static inline float hsum256(__m256 s)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* AVX2: four rows per pass share each 8-float load of x. */
GEMV256_TARGET static void gemv_avx2(const float *w, size_t out, size_t in, const float *x,
                                     const float *b, float *y)
{
    const size_t full = in / 8 * 8;
    size_t o = 0;
    for (; o + 4 <= out; o += 4) {
        const float *r = w + o * in;
        __m256 a0 = _mm256_setzero_ps();
        __m256 a1 = a0, a2 = a0, a3 = a0;
        for (size_t k = 0; k < full; k += 8) {
            const __m256 xv = _mm256_loadu_ps(x + k);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r + k), xv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r + in + k), xv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 2 * in + k), xv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 3 * in + k), xv, a3);
        }
        float s[4] = {hsum256(a0), hsum256(a1), hsum256(a2), hsum256(a3)};
        for (size_t k = full; k < in; k++) {
            for (size_t j = 0; j < 4; j++) {
                s[j] += r[j * in + k] * x[k];
            }
        }
        for (size_t j = 0; j < 4; j++) {
            y[o + j] = s[j] + b[o + j];
        }
    }
    for (; o < out; o++) {
        const float *r = w + o * in;
        __m256 a = _mm256_setzero_ps();
        for (size_t k = 0; k < full; k += 8) {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(r + k), _mm256_loadu_ps(x + k), a);
        }
        float s = hsum256(a);
        for (size_t k = full; k < in; k++) {
            s += r[k] * x[k];
        }
        y[o] = s + b[o];
    }
}
#endif /* AIMSI_GEMV_X86 */

static void gemv_c(const float *w, size_t out, size_t in, const float *x, const float *b,
                   float *y)
{
    for (size_t o = 0; o < out; o++) {
        const float *wr = w + o * in;
        float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        size_t i = 0;
        for (; i + 4 <= in; i += 4) {
            a[0] += wr[i] * x[i];
            a[1] += wr[i + 1] * x[i + 1];
            a[2] += wr[i + 2] * x[i + 2];
            a[3] += wr[i + 3] * x[i + 3];
        }
        float acc = (a[0] + a[1]) + (a[2] + a[3]);
        for (; i < in; i++) {
            acc += wr[i] * x[i];
        }
        y[o] = acc + b[o];
    }
}

/* Kernel choice: 0 until made, then 1 C, 2 AVX2, 3 AVX-512 (a benign race:
 * every thread computes the same answer). */
static int g_gemv_isa;

static int gemv_isa(void)
{
    int isa = __atomic_load_n(&g_gemv_isa, __ATOMIC_RELAXED);
    if (isa == 0) {
        isa = 1;
#ifdef AIMSI_GEMV_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            isa = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") ? 3
                                                                                           : 2;
        }
#endif
        __atomic_store_n(&g_gemv_isa, isa, __ATOMIC_RELAXED);
    }
    return isa;
}

int aimsi_gemv_isa_force(int isa)
{
    __atomic_store_n(&g_gemv_isa, 0, __ATOMIC_RELAXED);
    const int best = gemv_isa();
    if (isa == 0) {
        return best;
    }
    if (isa < 1 || isa > best) {
        return -1;
    }
    __atomic_store_n(&g_gemv_isa, isa, __ATOMIC_RELAXED);
    return isa;
}

void aimsi_gemv_bias(const float *w, size_t out, size_t in, const float *x, const float *b,
                     float *y)
{
#ifdef AIMSI_GEMV_X86
    const int isa = gemv_isa();
    if (isa == 3) {
        gemv_avx512(w, out, in, x, b, y);
        return;
    }
    if (isa == 2) {
        gemv_avx2(w, out, in, x, b, y);
        return;
    }
#endif
    gemv_c(w, out, in, x, b, y);
}
