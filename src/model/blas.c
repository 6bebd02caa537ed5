/*
 * blas.c -- the BLAS boundary of src/model and the library's build string.
 *
 * aims_build_info() lives here because only src/model may talk to BLAS, and
 * the build string must say which BLAS core and thread model the library runs
 * with (OpenBLAS picks its kernel at run time). It is built once, on first
 * use, under pthread_once, into static storage. Its "kernels" object says
 * which of libaims' own CPU-specific kernels this process will pick (the same
 * run-time tests the trainer and the predict paths make), so a benchmark
 * records what really ran rather than guessing from the CPU flags:
 *   gemm_f32, gemm_bf16  "own" (libaims' kernels) or "openblas" (bf16
 *                        without its kernel trains in fp32 on OpenBLAS/own fp32)
 *   smax_step            "own" or "off" (softmax regression's fused step)
 *   int8                 "vnni", "avx2" or "c" (quantized predict)
 */
#include <pthread.h>
#include <stdio.h>

#include "../codec/aimsi_codec.h"
#include "../core/aimsi_core.h"
#include "aimsi_model.h"
#include "aimsi_quant.h"
#include "aimsi_train.h"

/* OpenBLAS extensions (declared in its cblas.h; declared here so no BLAS header
 * is needed outside this file). */
extern char *openblas_get_config(void);
extern char *openblas_get_corename(void);
extern int openblas_get_num_threads(void);
extern int openblas_get_parallel(void);

static char g_info[768];
static pthread_once_t g_info_once = PTHREAD_ONCE_INIT;

static void build_info(void)
{
    static const char *const models[] = {"sequential", "pthreads", "openmp"};
    static const char *const q8[] = {"auto", "c", "avx2", "vnni"};
    const int par = openblas_get_parallel();
    const int q = aimsi_q8_isa();
    snprintf(g_info, sizeof g_info,
             "{\"version\":\"%s\",\"blas\":\"%s\",\"blas_core\":\"%s\","
             "\"blas_threads\":%d,\"blas_parallel\":\"%s\",\"zstd\":\"%s\","
             "\"cpus\":%u,\"kernels\":{\"gemm_f32\":\"%s\",\"gemm_bf16\":\"%s\","
             "\"smax_step\":\"%s\",\"int8\":\"%s\"}}",
             AIMS_VERSION_STRING, openblas_get_config(), openblas_get_corename(),
             openblas_get_num_threads(), (par >= 0 && par <= 2) ? models[par] : "unknown",
             aimsi_codec_zstd_version(), aimsi_cpu_count(),
             aimsi_gemm_own_available(AIMSI_GEMM_F32) ? "own" : "openblas",
             aimsi_gemm_own_available(AIMSI_GEMM_BF16) ? "own" : "openblas",
             aimsi_train_smax_cpu_ok() ? "own" : "off", (q >= 0 && q <= 3) ? q8[q] : "unknown");
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

/* The single-row kernel (y = W x + b on the calling thread) is in gemv.c. */
