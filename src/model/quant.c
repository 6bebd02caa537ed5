/*
 * quant.c -- post-training int8 quantization of dense layers and the int8 kernels.
 *
 * Scheme. Weights: symmetric, one scale per output channel,
 * wscale[o] = max|W[o,:]| / 127, qW = round(W / wscale) in [-127, 127]. Inputs of
 * every dense layer: symmetric too, one scale per layer, xscale = max|x| / 127
 * where the max runs over the layer's fp32 inputs on up to 1024 calibration
 * rows (spread evenly over the dataset, so a sorted file still gives a fair
 * sample). Max rather than a percentile: on Fashion-MNIST (784-256-10, ReLU,
 * bench/bench_quant.c) max calibration changes test accuracy by +0.01 pp
 * (0.8573 -> 0.8574), so there is nothing for a percentile to win, and a
 * percentile would clip exactly the large activations that decide the arg-max.
 *
 * Speed (same bench, single row, AVX-512 VNNI): 784x256 GEMV ~1.9 us, which is
 * the rate at which the 200 KB of int8 weights stream in from L2, and ~2.3 us
 * per predict call in all, vs ~14 us fp32 (sgemv) and ~21 us for PyTorch.
 *
 * Kernel. x86 has u8 x s8 dot products (VNNI vpdpbusd; AVX2 only through
 * vpmaddubsw, which saturates at 16 bits), so the int8 input x_q in
 * [-127, 127] is shifted to u8 = x_q + 128 and the shift is removed after the
 * dot product: with acc = sum_k (x_q + 128) qW[o,k],
 *     sum_k x_q qW[o,k] = acc - 128 * qwsum[o],   qwsum[o] = sum_k qW[o,k].
 * Everything stays exact in int32 while in <= AIMSI_Q8_MAX_IN, so the VNNI,
 * AVX2 and C kernels agree bit for bit (tests check it). The AVX2 kernel widens
 * to 16 bits and uses vpmaddwd, which cannot saturate for these ranges.
 * SIMD code is compiled per function with target attributes and chosen at run
 * time from __builtin_cpu_supports, so the library still runs on any x86-64.
 *
 * Dequantize: y[o] = (acc[o] - 128 qwsum[o]) * (xscale * wscale[o]) + b[o] in
 * float; model_predict.c calls aimsi_q8_dense_forward() per layer and applies the
 * activation, and each layer quantizes its own float input with its xscale.
 * The float hand-over costs ~50 ns per layer and keeps every activation
 * (GELU, tanh, sigmoid) exact and shared with the fp32 path.
 *
 * Ownership. aims_model_quantize() works on a clone; per layer it allocates
 * qw, wscale and qwsum separately with aimsi_malloc (model.c frees and clones
 * them, model_file.c serialises them) and zeroes the float W slots of params, which are never
 * read again (the file then compresses them away).
 *
 * Threads: the kernels and aimsi_q8_dense_forward are pure functions of their
 * arguments; the kernel choice is one atomic int.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_model.h"
#include "aimsi_quant.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define Q8_X86 1
#include <immintrin.h>
#else
#define Q8_X86 0
#endif

/* ---- portable kernels --------------------------------------------------------- */

static void gemv_c(const int8_t *qw, size_t in, size_t out, const uint8_t *xu, int32_t *acc)
{
    for (size_t o = 0; o < out; o++) {
        const int8_t *w = qw + o * in;
        int32_t s = 0;
        for (size_t k = 0; k < in; k++) {
            s += (int32_t)xu[k] * (int32_t)w[k];
        }
        acc[o] = s;
    }
}

/* 1.5 * 2^23: adding and subtracting it rounds a float of magnitude < 2^22 to
 * the nearest integer, ties to even -- the same rounding cvtps2dq uses, so the
 * scalar and SIMD quantizers agree. */
#define Q8_ROUND_MAGIC 12582912.0f

static void quantize_row_c(const float *x, size_t n, float inv_scale, uint8_t *xu)
{
    for (size_t i = 0; i < n; i++) {
        float t = x[i] * inv_scale;
        if (!(t >= -127.0f)) { /* also catches NaN */
            t = -127.0f;
        }
        if (t > 127.0f) {
            t = 127.0f;
        }
        const float r = (t + Q8_ROUND_MAGIC) - Q8_ROUND_MAGIC;
        xu[i] = (uint8_t)((int32_t)r + 128);
    }
}

/* ---- x86 kernels ----------------------------------------------------------------- */

#if Q8_X86

#define Q8_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define Q8_AVX2_TARGET __attribute__((target("avx2")))

/* Eight output rows per pass share each 64-byte load of x (so there are 9
 * loads per 8 vpdpbusd, close to the one-load-per-dot-product floor of a
 * row-major layout) and keep eight independent accumulation chains in flight.
 * The last partial block is read with masked loads, so nothing past `in` is
 * touched. Fewer than eight remaining rows go one at a time. */
#define Q8_DOT8(xv, off, ld)                                                          \
    do {                                                                            \
        a0 = _mm512_dpbusd_epi32(a0, (xv), ld(w + 0 * in + (off)));                 \
        a1 = _mm512_dpbusd_epi32(a1, (xv), ld(w + 1 * in + (off)));                 \
        a2 = _mm512_dpbusd_epi32(a2, (xv), ld(w + 2 * in + (off)));                 \
        a3 = _mm512_dpbusd_epi32(a3, (xv), ld(w + 3 * in + (off)));                 \
        a4 = _mm512_dpbusd_epi32(a4, (xv), ld(w + 4 * in + (off)));                 \
        a5 = _mm512_dpbusd_epi32(a5, (xv), ld(w + 5 * in + (off)));                 \
        a6 = _mm512_dpbusd_epi32(a6, (xv), ld(w + 6 * in + (off)));                 \
        a7 = _mm512_dpbusd_epi32(a7, (xv), ld(w + 7 * in + (off)));                 \
    } while (0)
#define Q8_LD_FULL(p) _mm512_loadu_si512((const void *)(p))
#define Q8_LD_TAIL(p) _mm512_maskz_loadu_epi8(tail, (const void *)(p))

Q8_VNNI_TARGET
static void gemv_vnni(const int8_t *qw, size_t in, size_t out, const uint8_t *xu, int32_t *acc)
{
    const size_t full = in / 64 * 64;
    const size_t rem = in - full;
    const __mmask64 tail = rem != 0 ? (__mmask64)(~0ULL >> (64 - rem)) : 0;
    size_t o = 0;
    for (; o + 8 <= out; o += 8) {
        const int8_t *w = qw + o * in;
        __m512i a0 = _mm512_setzero_si512();
        __m512i a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (size_t k = 0; k < full; k += 64) {
            const __m512i xv = Q8_LD_FULL(xu + k);
            Q8_DOT8(xv, k, Q8_LD_FULL);
        }
        if (rem != 0) {
            const __m512i xv = Q8_LD_TAIL(xu + full);
            Q8_DOT8(xv, full, Q8_LD_TAIL);
        }
        acc[o] = _mm512_reduce_add_epi32(a0);
        acc[o + 1] = _mm512_reduce_add_epi32(a1);
        acc[o + 2] = _mm512_reduce_add_epi32(a2);
        acc[o + 3] = _mm512_reduce_add_epi32(a3);
        acc[o + 4] = _mm512_reduce_add_epi32(a4);
        acc[o + 5] = _mm512_reduce_add_epi32(a5);
        acc[o + 6] = _mm512_reduce_add_epi32(a6);
        acc[o + 7] = _mm512_reduce_add_epi32(a7);
    }
    for (; o < out; o++) {
        const int8_t *w = qw + o * in;
        __m512i a = _mm512_setzero_si512();
        for (size_t k = 0; k < full; k += 64) {
            a = _mm512_dpbusd_epi32(a, Q8_LD_FULL(xu + k), Q8_LD_FULL(w + k));
        }
        if (rem != 0) {
            a = _mm512_dpbusd_epi32(a, Q8_LD_TAIL(xu + full), Q8_LD_TAIL(w + full));
        }
        acc[o] = _mm512_reduce_add_epi32(a);
    }
}

/* The panel kernel over pre-packed weights (aimsi_q8_pack): all the outputs
 * of a chunk (up to 256) stay in zmm accumulators while x streams past, four
 * bytes at a time broadcast to every lane; each 64-byte panel row feeds one
 * vpdpbusd with no shuffles and no horizontal sums, and the weights are read
 * as one sequential stream. Sums are the same exact int32 values as every
 * other kernel's. NB (blocks of 16 outputs) is a constant after inlining, so
 * the accumulators live in registers. */
Q8_VNNI_TARGET static inline __attribute__((always_inline)) void
q8p_chunk(size_t nb, const int8_t *p, size_t g4, const uint8_t *xu, int32_t *acc, size_t outs)
{
    __m512i a[16];
    for (size_t b = 0; b < nb; b++) {
        a[b] = _mm512_setzero_si512();
    }
    for (size_t g = 0; g < g4; g++) {
        int32_t x4;
        memcpy(&x4, xu + 4 * g, sizeof x4);
        const __m512i xb = _mm512_set1_epi32(x4);
        const int8_t *pg = p + g * nb * 64;
        for (size_t b = 0; b < nb; b++) {
            a[b] = _mm512_dpbusd_epi32(a[b], xb, _mm512_loadu_si512((const void *)(pg + b * 64)));
        }
    }
    for (size_t b = 0; b < nb && 16 * b < outs; b++) {
        const size_t left = outs - 16 * b;
        const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        _mm512_mask_storeu_epi32(acc + 16 * b, m, a[b]);
    }
}

Q8_VNNI_TARGET static void gemv_vnni_packed(const int8_t *p, size_t in, size_t out,
                                            const uint8_t *xu, int32_t *acc)
{
    const size_t g4 = (in + 3) / 4;
    size_t o = 0;
    for (size_t left = (out + 15) / 16; left > 0;) {
        const size_t nb = aimsi_q8_chunk_blocks(left);
        switch (nb) { /* one instantiation per chunk width */
        case 16:
            q8p_chunk(16, p, g4, xu, acc + o, out - o);
            break;
        case 8:
            q8p_chunk(8, p, g4, xu, acc + o, out - o);
            break;
        case 4:
            q8p_chunk(4, p, g4, xu, acc + o, out - o);
            break;
        case 2:
            q8p_chunk(2, p, g4, xu, acc + o, out - o);
            break;
        default:
            q8p_chunk(1, p, g4, xu, acc + o, out - o);
            break;
        }
        p += nb * g4 * 64;
        o += 16 * nb;
        left -= nb;
    }
}

/* Same arithmetic as quantize_row_c: vcvtps2dq rounds to nearest even under
 * the default MXCSR, and max/min return the bound for NaN (operand order). */
Q8_VNNI_TARGET
static void quantize_row_avx512(const float *x, size_t n, float inv_scale, uint8_t *xu)
{
    const __m512 inv = _mm512_set1_ps(inv_scale);
    const __m512 lo = _mm512_set1_ps(-127.0f);
    const __m512 hi = _mm512_set1_ps(127.0f);
    const __m512i off = _mm512_set1_epi32(128);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 t = _mm512_mul_ps(_mm512_loadu_ps(x + i), inv);
        t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
        const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(t), off);
        _mm_storeu_si128((__m128i *)(void *)(xu + i), _mm512_cvtepi32_epi8(q));
    }
    if (i < n) {
        quantize_row_c(x + i, n - i, inv_scale, xu + i);
    }
}

Q8_AVX2_TARGET
static int32_t hsum_avx2(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* quantize_row_c with AVX2: as in the AVX-512 version, cvtps2dq rounds to
 * nearest even and max/min with the data first return the bound for NaN.
 * Kept apart from quantize_row_avx512 on purpose: the width differs and so does the
 * narrowing store (one vpmovdb there, two saturating packs here); a macro over the
 * intrinsic names would hide that difference and a width-generic loop loses speed. */
Q8_AVX2_TARGET
static void quantize_row_avx2(const float *x, size_t n, float inv_scale, uint8_t *xu)
{
    const __m256 inv = _mm256_set1_ps(inv_scale);
    const __m256 lo = _mm256_set1_ps(-127.0f);
    const __m256 hi = _mm256_set1_ps(127.0f);
    const __m256i off = _mm256_set1_epi32(128);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
        t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
        const __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(t), off); /* 1..255 */
        const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(q),
                                             _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(void *)(xu + i), _mm_packus_epi16(w16, w16));
    }
    if (i < n) {
        quantize_row_c(x + i, n - i, inv_scale, xu + i);
    }
}

/* u8 and s8 are widened to 16 bits and multiplied with vpmaddwd: each int32
 * lane gets two products of at most 255 * 127, so nothing saturates (the
 * 8-bit vpmaddubsw would: 2 * 255 * 127 > 32767). */
Q8_AVX2_TARGET
static void gemv_avx2(const int8_t *qw, size_t in, size_t out, const uint8_t *xu, int32_t *acc)
{
    const size_t full = in / 16 * 16;
    size_t o = 0;
    for (; o + 4 <= out; o += 4) {
        const int8_t *w0 = qw + o * in;
        const int8_t *w1 = w0 + in;
        const int8_t *w2 = w1 + in;
        const int8_t *w3 = w2 + in;
        __m256i a0 = _mm256_setzero_si256();
        __m256i a1 = _mm256_setzero_si256();
        __m256i a2 = _mm256_setzero_si256();
        __m256i a3 = _mm256_setzero_si256();
        for (size_t k = 0; k < full; k += 16) {
            const __m256i xv = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(xu + k)));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(xv, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w0 + k)))));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(xv, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w1 + k)))));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(xv, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w2 + k)))));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(xv, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w3 + k)))));
        }
        int32_t s0 = hsum_avx2(a0);
        int32_t s1 = hsum_avx2(a1);
        int32_t s2 = hsum_avx2(a2);
        int32_t s3 = hsum_avx2(a3);
        for (size_t k = full; k < in; k++) {
            const int32_t xk = xu[k];
            s0 += xk * w0[k];
            s1 += xk * w1[k];
            s2 += xk * w2[k];
            s3 += xk * w3[k];
        }
        acc[o] = s0;
        acc[o + 1] = s1;
        acc[o + 2] = s2;
        acc[o + 3] = s3;
    }
    if (o < out) {
        gemv_c(qw + o * in, in, out - o, xu, acc + o);
    }
}

#endif /* Q8_X86 */

/* ---- run-time selection ------------------------------------------------------------ */

static atomic_int g_isa; /* 0 until chosen */

static int isa_supported(int isa)
{
#if Q8_X86
    __builtin_cpu_init();
    if (isa == AIMSI_Q8_VNNI) {
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni");
    }
    if (isa == AIMSI_Q8_AVX2) {
        return __builtin_cpu_supports("avx2");
    }
#endif
    return isa == AIMSI_Q8_C;
}

static int isa_best(void)
{
    if (isa_supported(AIMSI_Q8_VNNI)) {
        return AIMSI_Q8_VNNI;
    }
    if (isa_supported(AIMSI_Q8_AVX2)) {
        return AIMSI_Q8_AVX2;
    }
    return AIMSI_Q8_C;
}

int aimsi_q8_isa(void)
{
    int isa = atomic_load_explicit(&g_isa, memory_order_relaxed);
    if (isa == 0) {
        /* benign race: every thread computes the same answer */
        isa = isa_best();
        atomic_store_explicit(&g_isa, isa, memory_order_relaxed);
    }
    return isa;
}

int aimsi_q8_isa_force(int isa)
{
    if (isa == AIMSI_Q8_AUTO) {
        isa = isa_best();
    } else if (isa < AIMSI_Q8_C || isa > AIMSI_Q8_VNNI || !isa_supported(isa)) {
        return -1;
    }
    atomic_store_explicit(&g_isa, isa, memory_order_relaxed);
    return isa;
}

void aimsi_q8_gemv(const int8_t *qw, size_t in, size_t out, const uint8_t *xu, int32_t *acc)
{
#if Q8_X86
    const int isa = aimsi_q8_isa();
    if (isa == AIMSI_Q8_VNNI) {
        gemv_vnni(qw, in, out, xu, acc);
        return;
    }
    if (isa == AIMSI_Q8_AVX2) {
        gemv_avx2(qw, in, out, xu, acc);
        return;
    }
#endif
    gemv_c(qw, in, out, xu, acc);
}

void aimsi_q8_quantize_row(const float *x, size_t n, float inv_scale, uint8_t *xu)
{
#if Q8_X86
    const int isa = aimsi_q8_isa();
    if (isa == AIMSI_Q8_VNNI) {
        quantize_row_avx512(x, n, inv_scale, xu);
        return;
    }
    if (isa == AIMSI_Q8_AVX2) {
        quantize_row_avx2(x, n, inv_scale, xu);
        return;
    }
#endif
    quantize_row_c(x, n, inv_scale, xu);
}

/* ---- weights ---------------------------------------------------------------------- */

void aimsi_q8_quantize_weights(const float *w, size_t in, size_t out, int8_t *qw, float *wscale,
                               int32_t *qwsum)
{
    for (size_t o = 0; o < out; o++) {
        const float *row = w + o * in;
        float mx = 0.0f;
        for (size_t k = 0; k < in; k++) {
            const float a = fabsf(row[k]);
            mx = a > mx ? a : mx;
        }
        const float scale = mx / 127.0f;
        const float inv = mx > 0.0f ? 127.0f / mx : 0.0f;
        int32_t sum = 0;
        for (size_t k = 0; k < in; k++) {
            float t = row[k] * inv;
            t = t > 127.0f ? 127.0f : (t < -127.0f ? -127.0f : t);
            const int8_t q = (int8_t)lrintf(t);
            qw[o * in + k] = q;
            sum += q;
        }
        wscale[o] = scale;
        qwsum[o] = sum;
    }
}

/* ---- packed weights ---------------------------------------------------------------- */

size_t aimsi_q8_chunk_blocks(size_t left)
{
    return left >= 16 ? 16 : left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

size_t aimsi_q8_qw_bytes(size_t in, size_t out)
{
    return in * out + (out + 15) / 16 * ((in + 3) / 4) * 64;
}

/* Chunks of up to 16 blocks of 16 outputs (aimsi_q8_chunk_blocks); inside a
 * chunk, for each group of 4 inputs g, for each block, 64 bytes: output o's
 * qw[o][4g..4g+3] at 4 (o % 16). Zeros past `in` and past `out`. */
void aimsi_q8_pack(aimsi_dense *L)
{
    const size_t in = L->in;
    const size_t out = L->out;
    const size_t g4 = (in + 3) / 4;
    int8_t *p = L->qw + in * out;
    size_t blk0 = 0;
    for (size_t left = (out + 15) / 16; left > 0;) {
        const size_t nb = aimsi_q8_chunk_blocks(left);
        for (size_t g = 0; g < g4; g++) {
            for (size_t b = 0; b < nb; b++) {
                for (size_t o = 0; o < 16; o++) {
                    const size_t row = (blk0 + b) * 16 + o;
                    for (size_t j = 0; j < 4; j++) {
                        const size_t col = 4 * g + j;
                        *p++ = row < out && col < in ? L->qw[row * in + col] : 0;
                    }
                }
            }
        }
        blk0 += nb;
        left -= nb;
    }
}

void aimsi_q8_gemv_packed(const aimsi_dense *L, const uint8_t *xu, int32_t *acc)
{
#if Q8_X86
    if (aimsi_q8_isa() == AIMSI_Q8_VNNI) {
        gemv_vnni_packed(L->qw + L->in * L->out, L->in, L->out, xu, acc);
        return;
    }
#endif
    aimsi_q8_gemv(L->qw, L->in, L->out, xu, acc);
}

/* ---- forward ------------------------------------------------------------------------ */

/* One dense layer, int8: see aimsi_model.h. Scratch use per row: the u8 input
 * (in bytes, rounded up to whole floats) then out int32 sums -- well inside the
 * 2 * rows * max(in, out) floats the caller provides. */
void aimsi_q8_dense_forward(const aims_model *m, const aimsi_dense *L, const float *x,
                            size_t rows, float *scratch, float *y)
{
    const size_t in = L->in;
    const size_t out = L->out;
    uint8_t *xu = (uint8_t *)(void *)scratch;
    int32_t *acc = (int32_t *)(void *)(scratch + (in + 3) / 4);
    const float *b = m->params + L->b_off;
    const float inv = L->xscale > 0.0f ? 1.0f / L->xscale : 0.0f;
    /* the panel kernel reads x four bytes at a time: the pad bytes meet zero
     * weights, but are zeroed so nothing uninitialised is read */
    memset(xu + in, 0, (in + 3) / 4 * 4 - in);
    for (size_t r = 0; r < rows; r++) {
        aimsi_q8_quantize_row(x + r * in, in, inv, xu);
        aimsi_q8_gemv_packed(L, xu, acc);
        float *yr = y + r * out;
        for (size_t o = 0; o < out; o++) {
            /* exact for every qwsum quantize() makes (|128 qwsum| < 2^31 as in <=
             * AIMSI_Q8_MAX_IN); unsigned so that a hostile qwsum from a file
             * wraps instead of overflowing, and the loop stays vectorisable */
            const int32_t s = (int32_t)((uint32_t)acc[o] - 128u * (uint32_t)L->qwsum[o]);
            yr[o] = (float)s * (L->xscale * L->wscale[o]) + b[o];
        }
    }
}

/* ---- calibration ------------------------------------------------------------------------ */

static float max_abs(const float *v, size_t n)
{
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float a = fabsf(v[i]);
        if (!(a <= mx)) { /* NaN propagates so the caller can refuse it */
            mx = a;
        }
    }
    return mx;
}

static size_t widest(const aims_model *m)
{
    size_t w = m->input_dim;
    for (size_t l = 0; l < m->n_layers; l++) {
        w = m->layers[l].out > w ? m->layers[l].out : w;
        w = m->layers[l].in > w ? m->layers[l].in : w;
    }
    return w;
}

/* xmax[l] = max |input of layer l| over the fp32 forward of the sample rows. */
static aims_status calibrate(const aims_model *m, const aims_dataset *ds, float *xmax)
{
    const size_t n = ds->rows < AIMSI_Q8_CALIB_ROWS ? ds->rows : AIMSI_Q8_CALIB_ROWS;
    size_t cells = 0;
    if (aimsi_mul_ok(n, widest(m), &cells) != 0 || aimsi_mul_ok(cells, 2, &cells) != 0) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_model_quantize: calibration buffer too large");
    }
    float *buf = aimsi_calloc(cells, sizeof(float));
    if (buf == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_model_quantize: no memory for %zu floats", cells);
    }
    float *a = buf;
    float *nxt = buf + cells / 2;
    const size_t in0 = m->input_dim;
    for (size_t i = 0; i < n; i++) {
        const size_t src = (size_t)((uint64_t)i * ds->rows / n);
        memcpy(a + i * in0, ds->x + src * in0, in0 * sizeof(float));
    }
    aims_status rc = AIMS_OK;
    for (size_t l = 0; l < m->n_layers && rc == AIMS_OK; l++) {
        const aimsi_dense *L = &m->layers[l];
        xmax[l] = max_abs(a, n * L->in);
        if (!isfinite(xmax[l])) {
            rc = aimsi_err(NULL, AIMS_E_INVAL,
                           "aims_model_quantize: non-finite value at the input of layer %zu", l);
            break;
        }
        if (l + 1 == m->n_layers) {
            break;
        }
        aimsi_sgemm(0, 1, n, L->out, L->in, 1.0f, a, L->in, m->params + L->w_off, L->in, 0.0f,
                    nxt, L->out);
        const float *b = m->params + L->b_off;
        for (size_t i = 0; i < n; i++) {
            for (size_t o = 0; o < L->out; o++) {
                nxt[i * L->out + o] += b[o];
            }
        }
        aimsi_act_apply(L->act, nxt, n * L->out);
        float *t = a;
        a = nxt;
        nxt = t;
    }
    aimsi_free(buf);
    return rc;
}

/* Give layer L of q its int8 form. Allocations only; q's floats are untouched. */
static aims_status fill_layer(aims_model *q, aimsi_dense *L, float xmax)
{
    size_t nw = 0;
    if (aimsi_mul_ok(L->in, L->out, &nw) != 0) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_model_quantize: layer too large");
    }
    int8_t *qw = aimsi_malloc(aimsi_q8_qw_bytes(L->in, L->out));
    float *ws = aimsi_malloc(L->out * sizeof(float));
    int32_t *qs = aimsi_malloc(L->out * sizeof(int32_t));
    if (qw == NULL || ws == NULL || qs == NULL) {
        aimsi_free(qw);
        aimsi_free(ws);
        aimsi_free(qs);
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_model_quantize: no memory for int8 weights");
    }
    aimsi_q8_quantize_weights(q->params + L->w_off, L->in, L->out, qw, ws, qs);
    L->qw = qw;
    L->wscale = ws;
    L->qwsum = qs;
    aimsi_q8_pack(L);
    /* an all-zero input (xmax 0) quantizes to 0 whatever the scale; 1 keeps
     * the division well defined */
    L->xscale = xmax > 0.0f ? xmax / 127.0f : 1.0f;
    return AIMS_OK;
}

static aims_status quantize_check(const aims_model *m, const aims_dataset *calib)
{
    if (m->kind == AIMS_MODEL_KIND_TEXT) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                         "aims_model_quantize: TEXT models are not quantized");
    }
    if (!m->trained) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_model_quantize: model is not trained");
    }
    if (m->quantized) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_model_quantize: model is already quantized");
    }
    if (calib->x == NULL || calib->rows == 0 || calib->cols != m->input_dim) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_model_quantize: calib has %zu rows x %zu dense columns, model "
                         "input is %zu",
                         calib->rows, calib->x != NULL ? calib->cols : (size_t)0, m->input_dim);
    }
    for (size_t l = 0; l < m->n_layers; l++) {
        if (m->layers[l].in > AIMSI_Q8_MAX_IN) {
            return aimsi_err(NULL, AIMS_E_UNSUPPORTED,
                             "aims_model_quantize: layer %zu has %zu inputs (int8 limit %u)", l,
                             m->layers[l].in, AIMSI_Q8_MAX_IN);
        }
    }
    return AIMS_OK;
}

aims_status aims_model_quantize(const aims_model *m, const aims_dataset *calib, aims_model **out)
{
    if (!aimsi_obj_ok(m, AIMSI_MAGIC_MODEL)) {
        return AIMSI_MISUSE("m is not a model");
    }
    if (!aimsi_obj_ok(calib, AIMSI_MAGIC_DATASET)) {
        return AIMSI_MISUSE("calib is not a dataset");
    }
    if (out == NULL) {
        return AIMSI_MISUSE("out is NULL");
    }
    AIMSI_TRY(quantize_check(m, calib));
    float xmax[AIMSI_MAX_LAYERS];
    AIMSI_TRY(calibrate(m, calib, xmax));
    aims_model *q = NULL;
    AIMSI_TRY(aims_model_clone(m, &q));
    aims_status rc = AIMS_OK;
    for (size_t l = 0; l < q->n_layers && rc == AIMS_OK; l++) {
        rc = fill_layer(q, &q->layers[l], xmax[l]);
    }
    if (rc != AIMS_OK) {
        aims_model_destroy(q); /* frees the layers already filled */
        return rc;
    }
    for (size_t l = 0; l < q->n_layers; l++) {
        const aimsi_dense *L = &q->layers[l];
        memset(q->params + L->w_off, 0, L->in * L->out * sizeof(float));
    }
    q->quantized = 1;
    *out = q;
    return AIMS_OK;
}
