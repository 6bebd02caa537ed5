/*
 * bench_kernels.c -- the two big GEMMs of a P1 training step in isolation
 * (issue 15 item 6; docs/kernels.md): the 784-256-10 MLP's first layer at
 * batch 128, through libaims' own kernels (src/model/gemm.c).
 *
 * usage: bench_kernels [PREC [THREADS]]   PREC 0 fp32 (default) | 1 bf16
 * ("isa" in each row: the kernel that ran, avx512 or avx2)
 *
 * Prints, per GEMM, the best of 30 rounds of 20 calls (microseconds and
 * GFLOP/s; best_call_us: the fastest single call, which a loaded machine
 * disturbs less): the forward Y = X W^T with the bias+ReLU epilogue, the weight
 * gradient dW = G^T X with beta 1 (accumulating into the momentum buffer),
 * the same with the SGD epilogue (the fused update, lr 0 so the weights keep
 * their values) and with beta 0; then the forward's plain product
 * Y = X W^T (beta 0, no epilogue) through the own kernel and through OpenBLAS
 * cblas_sgemm with the same thread count, one after the other in the same
 * run (the sgemm goal P4 compares with; run it with OPENBLAS_CORETYPE unset
 * for OpenBLAS's native kernel); then the update with the SGD epilogue
 * also writing the forward's panels of W^T (aimsi_gemm_epi.wpk), and the
 * forward reading them instead of packing W (aimsi_gemm_pre.bpk; it says
 * whether its output equals the packing forward's, bit for bit). Internal API, so it links the static
 * library; a measurement tool, never part of `meson test`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "model/aimsi_model.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

enum { B = 128, IN = 784, OUT = 256, ROUNDS = 30, CALLS = 20 };

int main(int argc, char **argv)
{
    const int prec = argc > 1 ? atoi(argv[1]) : AIMSI_GEMM_F32;
    const int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (!aimsi_gemm_own_available(prec)) {
        fprintf(stderr, "bench_kernels: the own %s GEMM needs %s on this CPU\n",
                prec ? "bf16" : "fp32", prec ? "AVX512_BF16" : "AVX-512 or AVX2+FMA");
        return 1;
    }
    float *x = malloc(sizeof(float) * B * IN);
    float *w = malloc(sizeof(float) * OUT * IN);
    float *v = calloc((size_t)OUT * IN, sizeof(float));
    float *y = malloc(sizeof(float) * B * OUT);
    float *g = malloc(sizeof(float) * B * OUT);
    float *bias = calloc(OUT, sizeof(float));
    size_t ws_bytes = aimsi_gemm_own_ws_bytes(prec, B, OUT, IN);
    const size_t dw_bytes = aimsi_gemm_own_ws_bytes(prec, OUT, IN, B);
    ws_bytes = dw_bytes > ws_bytes ? dw_bytes : ws_bytes;
    void *ws = malloc(ws_bytes);
    aimsi_pool *pool = NULL;
    if (!x || !w || !v || !y || !g || !bias || !ws ||
        (threads > 1 && aimsi_pool_create((unsigned)threads, &pool) != AIMS_OK)) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        return 1;
    }
    aimsi_pool_set_spin(pool, 200);
    for (size_t i = 0; i < (size_t)B * IN; i++) {
        x[i] = (float)(i % 255) / 255.0f;
    }
    for (size_t i = 0; i < (size_t)OUT * IN; i++) {
        w[i] = (float)((int)(i % 61) - 30) * 0.001f;
    }
    for (size_t i = 0; i < (size_t)B * OUT; i++) {
        g[i] = (float)((int)(i % 17) - 8) * 0.001f;
    }
    static const char *const names[] = {"forward 128x256x784 +bias+ReLU", "dW 256x784x128 beta 1",
                                        "dW 256x784x128 + SGD epilogue", "dW 256x784x128 beta 0",
                                        "own sgemm 128x256x784 X W^T",
                                        "openblas sgemm 128x256x784 X W^T",
                                        "dW 256x784x128 + SGD epilogue + W^T panels",
                                        "forward 128x256x784 +bias+ReLU from the panels"};
    /* the forward's panels of w as the fused update writes them (train_dense.c) */
    const size_t ks = prec == AIMSI_GEMM_BF16 ? (IN + 1) / 2 : IN;
    uint32_t *wpk = calloc((OUT + 31) / 32 * 32 * ks, sizeof(uint32_t));
    float *y0 = malloc(sizeof(float) * B * OUT);
    if (wpk == NULL || y0 == NULL) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        return 1;
    }
    openblas_set_num_threads(threads);
    for (int which = 0; which < 8; which++) {
        double best = 1e9;
        double best_call = 1e9; /* the fastest single call: robust to preemption */
        for (int r = 0; r < ROUNDS; r++) {
            const double t0 = now_s();
            for (int it = 0; it < CALLS; it++) {
                const double c0 = now_s();
                aimsi_gemm_epi e;
                memset(&e, 0, sizeof e);
                if (which == 0 || which == 7) {
                    aimsi_gemm_pre pre;
                    memset(&pre, 0, sizeof pre);
                    pre.bpk = which == 7 ? wpk : NULL;
                    e.bias = bias;
                    e.relu = 1;
                    aimsi_gemm_own_pre(pool, ws, prec, 0, 1, B, OUT, IN, x, IN, w, IN, 0.0f,
                                       which == 7 ? y : y0, OUT, &e, &pre);
                } else if (which == 4) {
                    aimsi_gemm_own(pool, ws, prec, 0, 1, B, OUT, IN, x, IN, w, IN, 0.0f, y, OUT);
                } else if (which == 5) {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, OUT, IN, 1.0f, x, IN,
                                w, IN, 0.0f, y, OUT);
                } else if (which == 2 || which == 6) {
                    e.w = w;
                    e.wpk = which == 6 ? wpk : NULL;
                    e.ldw = IN;
                    e.mom = 0.9f; /* lr 0: w keeps its values */
                    aimsi_gemm_own_epi(pool, ws, prec, 1, 0, OUT, IN, B, g, OUT, x, IN, 1.0f, v,
                                       IN, &e);
                } else {
                    aimsi_gemm_own_epi(pool, ws, prec, 1, 0, OUT, IN, B, g, OUT, x, IN,
                                       which == 1 ? 1.0f : 0.0f, v, IN, NULL);
                }
                const double dc = now_s() - c0;
                best_call = dc < best_call ? dc : best_call;
            }
            const double dt = (now_s() - t0) / CALLS;
            best = dt < best ? dt : best;
        }
        printf("{\"gemm\": \"%s\", \"prec\": %d, \"isa\": \"%s\", \"threads\": %d, "
               "\"best_us\": %.1f, \"best_call_us\": %.1f, \"gflops\": %.1f",
               names[which], prec, aimsi_gemm_isa() == AIMSI_GEMM_ISA_AVX512 ? "avx512" : "avx2",
               threads, best * 1e6, best_call * 1e6, 2.0 * B * IN * OUT / best * 1e-9);
        if (which == 7) { /* lr 0: w never changed, so the panels are w's */
            printf(", \"same_as_packed\": %s", memcmp(y, y0, sizeof(float) * B * OUT) == 0 ?
                                                  "true" : "false");
        }
        printf("}\n");
    }
    aimsi_pool_destroy(pool);
    free(y0);
    free(wpk);
    free(ws);
    free(bias);
    free(g);
    free(y);
    free(v);
    free(w);
    free(x);
    return 0;
}
