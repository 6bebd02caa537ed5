/*
 * aimsi_modelobj.h -- private to model.c, model_predict.c and model_file.c:
 * the limits the model object enforces on construction and that the file
 * reader re-checks, and the few helpers these three files share.
 */
#ifndef AIMSI_MODELOBJ_H
#define AIMSI_MODELOBJ_H

#include "aimsi_model.h"

#define MODEL_OK(m) aimsi_obj_ok((m), AIMSI_MAGIC_MODEL)
#define MAX_DIM ((size_t)1 << 24)           /* any one width */
#define MAX_PARAMS ((size_t)1 << 28)        /* 1 GiB of floats */
#define TEXT_MAX_WIDTH 4096 /* widest TEXT hidden vector: predict keeps it on the stack */

/* Loss the model trains with: 1 cross-entropy, 2 MSE, 3 hinge (TEXT only, which
 * aims_model_set_param enforces). */
int aimsi_model_resolve_loss(const aims_model *m);

#endif /* AIMSI_MODELOBJ_H */
