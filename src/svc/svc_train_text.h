/*
 * svc_train_text.h -- private to svc_train.c and svc_train_text.c: the token
 * dataset of a kind=text train submit.
 */
#ifndef AIMSI_SVC_TRAIN_TEXT_H
#define AIMSI_SVC_TRAIN_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "aims/aims.h"

/* Split "text" into one document per row of y, run them through the service's
 * fitted pipeline p and hand back the token dataset and its token width.
 * AIMS_E_INVAL names what is wrong (no pipeline, document count, no tokens). */
aims_status aimsi_train_text_data(const aims_pipeline *p, const char *text, size_t text_len,
                                  const int32_t *y, size_t rows, aims_dataset **out,
                                  size_t *token_dim);

#endif
