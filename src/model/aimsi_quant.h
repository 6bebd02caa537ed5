/*
 * aimsi_quant.h -- int8 kernels of quant.c, exposed for white-box tests and
 * for the other files of src/model.
 *
 * The GEMV computes raw sums acc[o] = sum_k xu[k] * qw[o*in + k] with xu
 * unsigned (the symmetric int8 input shifted by +128) and qw signed, exactly in
 * int32 (callers keep in <= AIMSI_Q8_MAX_IN so no lane can overflow). Three
 * implementations give bit-identical results: AVX-512 VNNI, AVX2 (widened to
 * 16 bits, so no saturation) and portable C. The one used is chosen from the
 * CPU at first use; tests may force another with aimsi_q8_isa_force().
 */
#ifndef AIMSI_QUANT_H
#define AIMSI_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "aimsi_model.h"

/* in * 255 * 127 must fit an int32 lane. */
#define AIMSI_Q8_MAX_IN 65536u
/* Calibration rows read from the calibration dataset (public contract: 1024). */
#define AIMSI_Q8_CALIB_ROWS 1024u

enum { AIMSI_Q8_AUTO = 0, AIMSI_Q8_C = 1, AIMSI_Q8_AVX2 = 2, AIMSI_Q8_VNNI = 3 };

/* Select a kernel (AIMSI_Q8_AUTO: best the CPU supports). Returns the kernel now
 * in effect, or -1 (and changes nothing) when the CPU cannot run the one asked
 * for. Process-wide; meant for tests and benchmarks only. */
int aimsi_q8_isa_force(int isa);
/* The kernel in effect (never AUTO). */
int aimsi_q8_isa(void);

/* acc[out] = raw u8 x s8 sums of one input row xu[in] against qw (out x in). */
void aimsi_q8_gemv(const int8_t *qw, size_t in, size_t out, const uint8_t *xu, int32_t *acc);

/* xu[i] = clamp(round_half_even(x[i] * inv_scale), -127, 127) + 128; NaN -> 1. */
void aimsi_q8_quantize_row(const float *x, size_t n, float inv_scale, uint8_t *xu);

/* Quantize one float weight matrix (out x in) per output channel:
 * wscale[o] = max|w[o,:]| / 127 (0 for an all-zero row), qw = round(w / wscale),
 * qwsum[o] = sum_k qw[o,k]. */
void aimsi_q8_quantize_weights(const float *w, size_t in, size_t out, int8_t *qw, float *wscale,
                               int32_t *qwsum);

/* Pre-packed weights for the single-row path. A layer's qw block holds the
 * out x in matrix (files, clones and the row kernels read it) followed by the
 * same weights in the panel layout of the VNNI panel kernel; the block is
 * aimsi_q8_qw_bytes(in, out) bytes, and aimsi_q8_pack() writes the panel copy
 * once the matrix is filled (quantize, model load, clone copies both). */
size_t aimsi_q8_qw_bytes(size_t in, size_t out);
void aimsi_q8_pack(aimsi_dense *L);
/* Blocks of 16 outputs in the next chunk, with `left` blocks to go. */
size_t aimsi_q8_chunk_blocks(size_t left);
/* acc[out] as aimsi_q8_gemv, from the panel copy when the VNNI kernel is in
 * effect (else the matrix). xu must be readable to a multiple of 4 bytes. */
void aimsi_q8_gemv_packed(const aimsi_dense *L, const uint8_t *xu, int32_t *acc);

#endif /* AIMSI_QUANT_H */
