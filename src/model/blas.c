/*
 * blas.c -- the BLAS boundary of src/model and the library's build string.
 *
 * aims_build_info() lives here because only src/model may talk to BLAS, and
 * the build string must say which BLAS core and thread model the library runs
 * with (OpenBLAS picks its kernel at run time). It is built once, on first
 * use, under pthread_once, into static storage.
 */
#include <pthread.h>
#include <stdio.h>

#include "../codec/aimsi_codec.h"
#include "../core/aimsi_core.h"
#include "aimsi_model.h"

/* OpenBLAS extensions (declared in its cblas.h; declared here so no BLAS header
 * is needed outside this file). */
extern char *openblas_get_config(void);
extern char *openblas_get_corename(void);
extern int openblas_get_num_threads(void);
extern int openblas_get_parallel(void);

static char g_info[512];
static pthread_once_t g_info_once = PTHREAD_ONCE_INIT;

static void build_info(void)
{
    static const char *const models[] = {"sequential", "pthreads", "openmp"};
    const int par = openblas_get_parallel();
    snprintf(g_info, sizeof g_info,
             "{\"version\":\"%s\",\"blas\":\"%s\",\"blas_core\":\"%s\","
             "\"blas_threads\":%d,\"blas_parallel\":\"%s\",\"zstd\":\"%s\","
             "\"cpus\":%u}",
             AIMS_VERSION_STRING, openblas_get_config(), openblas_get_corename(),
             openblas_get_num_threads(), (par >= 0 && par <= 2) ? models[par] : "unknown",
             aimsi_codec_zstd_version(), aimsi_cpu_count());
}

const char *aims_build_info(void)
{
    pthread_once(&g_info_once, build_info);
    return g_info;
}

/* ---- the GEMM boundary ------------------------------------------------------------
 *
 * Everything dense in src/model goes through aimsi_sgemm(). One row (the
 * single-row predict path) is a matrix-vector product: sgemv avoids GEMM's
 * packing, which dominates at M = 1. cblas.h is kept out of the tree; the
 * handful of CBLAS enum values used are fixed by the CBLAS standard. */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
extern void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c,
                        int ldc);
extern void cblas_sgemv(int order, int trans, int m, int n, float alpha, const float *a,
                        int lda, const float *x, int incx, float beta, float *y, int incy);

void aimsi_sgemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                 const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                 size_t ldc)
{
    if (m == 1 && !trans_a) {
        /* c[1 x n] = a[1 x k] op(B): with B stored n x k (trans_b) that is B a,
         * otherwise B^T a. */
        cblas_sgemv(CBLAS_ROW_MAJOR, trans_b ? CBLAS_NO_TRANS : CBLAS_TRANS,
                    trans_b ? (int)n : (int)k, trans_b ? (int)k : (int)n, alpha, b, (int)ldb, a,
                    1, beta, c, 1);
        return;
    }
    /* OpenBLAS threads any sgemm with m*n*k >= 65536 * GEMM_MULTITHREAD_THRESHOLD
     * (4 in Debian's build); just above that line the wake-up of its workers
     * costs more than the multiply (e.g. the 128x10x256 output layer of an MLP).
     * Such calls are split along m or n -- never k, so every sum is computed
     * exactly as before -- into pieces OpenBLAS runs on the calling thread. */
    const size_t mt_line = (size_t)65536 * 4;
    const size_t work = m * n * k;
    if (work >= mt_line && work < 4 * mt_line) {
        const size_t pieces = work / mt_line + 1;
        if (m >= n && m >= pieces) {
            const size_t step = (m + pieces - 1) / pieces;
            for (size_t r = 0; r < m; r += step) {
                const size_t rows = m - r < step ? m - r : step;
                const float *ar = trans_a ? a + r : a + r * lda;
                aimsi_sgemm(trans_a, trans_b, rows, n, k, alpha, ar, lda, b, ldb, beta,
                            c + r * ldc, ldc);
            }
            return;
        }
        if (n >= pieces) {
            const size_t step = (n + pieces - 1) / pieces;
            for (size_t j = 0; j < n; j += step) {
                const size_t cols = n - j < step ? n - j : step;
                const float *bj = trans_b ? b + j * ldb : b + j;
                aimsi_sgemm(trans_a, trans_b, m, cols, k, alpha, a, lda, bj, ldb, beta, c + j,
                            ldc);
            }
            return;
        }
    }
    cblas_sgemm(CBLAS_ROW_MAJOR, trans_a ? CBLAS_TRANS : CBLAS_NO_TRANS,
                trans_b ? CBLAS_TRANS : CBLAS_NO_TRANS, (int)m, (int)n, (int)k, alpha, a,
                (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* ---- single-row kernel --------------------------------------------------------------
 *
 * y = W x + b for one row (W out x in, row-major): the single-row predict path.
 * OpenBLAS threads an sgemv of this size (784 x 256 is above its threshold),
 * and the hand-off to its workers costs more than the 200k multiply-adds; a
 * plain dot product per output on the calling thread is faster, never
 * contends with other predictors, and allocates nothing. AVX2+FMA when the CPU
 * has it (chosen once), portable C otherwise. */
#include <immintrin.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define AIMSI_HAVE_AVX2_PATH 1
__attribute__((target("avx2,fma"))) static void gemv_avx2(const float *w, size_t out,
                                                         size_t in, const float *x,
                                                         const float *b, float *y)
{
    for (size_t o = 0; o < out; o++) {
        const float *wr = w + o * in;
        __m256 a0 = _mm256_setzero_ps();
        __m256 a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps();
        __m256 a3 = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 32 <= in; i += 32) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + i), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + i + 8), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + i + 16), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + i + 24), _mm256_loadu_ps(x + i + 24), a3);
        }
        for (; i + 8 <= in; i += 8) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wr + i), _mm256_loadu_ps(x + i), a0);
        }
        const __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        float acc = _mm_cvtss_f32(h);
        for (; i < in; i++) {
            acc += wr[i] * x[i];
        }
        y[o] = acc + b[o];
    }
}
#endif

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

void aimsi_gemv_bias(const float *w, size_t out, size_t in, const float *x, const float *b,
                     float *y)
{
#ifdef AIMSI_HAVE_AVX2_PATH
    /* __builtin_cpu_supports is cheap (reads a cached word) and thread-safe */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        gemv_avx2(w, out, in, x, b, y);
        return;
    }
#endif
    gemv_c(w, out, in, x, b, y);
}
