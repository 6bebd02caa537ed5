/*
 * aims_optimize.h -- the optimize service: int8 post-training quantization
 * with an accuracy guard, as a service (docs/OPTIMIZE.md).
 *
 * Why: aims_model_quantize is a library call; a deployment wants "make this
 * model smaller and faster, but only if it stays accurate" as a request any
 * client (or pipeline step) can make of a running node, with the numbers to
 * decide on (accuracy, file size and single-row latency of both models) in
 * the reply, and the result optionally put straight into service on an infer
 * service of the same node.
 *
 * How: one method, "optimize", run on the service's worker threads (never on
 * an I/O thread): parse the fp32 bundle, calibrate and quantize its model on
 * calibration rows, evaluate fp32 and int8 on held-out rows, time both, and
 * refuse (AIMS_E_RANGE, no bundle) when the accuracy drop is over the bound.
 */
#ifndef AIMS_OPTIMIZE_H
#define AIMS_OPTIMIZE_H

#include "aims_svc.h"

AIMS_EXTERN_C_BEGIN

/**
 * @brief Add an optimize service (by convention named "optimize.<model>").
 *
 * Method "optimize". Request tensors:
 *  - "bundle"   BYTES: an aims bundle file (pipeline + dense fp32 classifier);
 *  - "x"        f32 [rows, cols]: held-out rows, raw (the bundle's pipeline
 *               is applied), rows >= 1;
 *  - "y"        i32 [rows]: their classes;
 *  - "max_drop" f32 scalar: the largest accepted fp32 - int8 accuracy drop
 *               (0.01 = one point; 0 or negative demands no loss / a gain);
 *  - "calib_x"  f32 [crows, cols], optional: calibration rows (default: "x";
 *               pass a separate subset to keep evaluation unbiased);
 *  - "publish"  BYTES, optional: an infer service on this node to serve the
 *               int8 bundle (aims_service_swap_bundle) when accepted;
 *  - "version"  BYTES, optional: the int8 bundle's "version" metadata
 *               (default "<fp32 version>-int8").
 *
 * Reply (AIMS_OK, drop within the bound): "fp32_accuracy", "int8_accuracy",
 * "drop", "fp32_latency_us", "int8_latency_us" (f32 scalars; latency = median
 * of up to 64 single-row aims_bundle_predict_rows calls, pipeline included),
 * "fp32_bytes", "int8_bytes", "rows", "fp32_correct", "int8_correct" (i64
 * scalars: bundle file sizes, eval rows, rows each model classified right:
 * the exact accuracies), "bundle" (BYTES: the int8 bundle file) and, when
 * published,
 * "published" (i64 1).
 *
 * Errors (reply empty, aims_msg_error / aims_client_errmsg say which):
 * AIMS_E_RANGE when the drop exceeds "max_drop" (the message carries both
 * accuracies and the drop; no bundle is returned, nothing is published);
 * AIMS_E_INVAL for missing or ill-shaped tensors, labels out of range, a
 * column count the bundle does not take; AIMS_E_CORRUPT for bundle bytes that
 * do not parse; AIMS_E_UNSUPPORTED for TEXT, regression or already quantized
 * models; AIMS_E_NOTFOUND for an unknown "publish" target.
 *
 * Authorization: with a policy on the node the call is decided as
 * "call <service>/optimize", and a request with "publish" also needs
 * "swap <target>".
 *
 * @param n     The node that hosts the service; must not be NULL.
 * @param name  Service name ("optimize.<model>", or with "@version").
 * @param out   [out] the service (owned by the node); must not be NULL.
 * @return AIMS_OK, AIMS_E_MISUSE, AIMS_E_NOMEM, or as aims_service_add_handler.
 * @note Thread safety: as the other aims_service_add_* calls.
 * @since 0.1
 */
AIMS_API aims_status aims_service_add_optimize(aims_node *n, const char *name,
                                               aims_service **out);

AIMS_EXTERN_C_END

#endif /* AIMS_OPTIMIZE_H */
