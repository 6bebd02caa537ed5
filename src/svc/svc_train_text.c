/*
 * svc_train_text.c -- the TEXT model kind of the train service (svc_train.c):
 * a submit with kind=text carries "text" (BYTES, one '\n'-separated document
 * per row of "y") instead of "x".
 *
 * How. The documents become a text dataset, which the service's fitted
 * pipeline (a tokenize + hash pipeline, the same one stored in the result
 * bundle and so applied again at infer time) turns into the token dataset a
 * TEXT model trains on; the model's input width is the pipeline's token
 * width. Splitting the bytes into documents is the codec's (aimsi_kv_lines);
 * this file only checks that there is one document per label and that the
 * pipeline yields tokens. Kept apart so svc_train.c stays one job.
 */
#include <string.h>

#include "../codec/aimsi_kv.h"
#include "../core/aimsi_core.h"
#include "svc_train_text.h"

aims_status aimsi_train_text_data(const aims_pipeline *p, const char *text, size_t text_len,
                                  const int32_t *y, size_t rows, aims_dataset **out,
                                  size_t *token_dim)
{
    if (p == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "submit: kind=text needs a train service created "
                                             "with a fitted text pipeline (tokenize + hash)");
    }
    const char **starts = aimsi_calloc(rows, sizeof *starts);
    size_t *lens = aimsi_calloc(rows, sizeof *lens);
    aims_status rc = AIMS_OK;
    if (starts == NULL || lens == NULL) {
        rc = aimsi_err(NULL, AIMS_E_NOMEM, "submit: no memory for %zu documents", rows);
    }
    size_t got = 0;
    if (rc == AIMS_OK) {
        got = aimsi_kv_lines(text, text_len, rows, starts, lens);
        if (got != rows) {
            rc = aimsi_err(NULL, AIMS_E_INVAL, "submit: \"text\" holds %s%zu documents "
                           "('\\n'-separated) but \"y\" has %zu rows", got > rows ? "more than " : "",
                           got > rows ? rows : got, rows);
        }
    }
    aims_dataset *raw = NULL;
    if (rc == AIMS_OK) {
        rc = aims_dataset_create_texts(rows, starts, lens, y, &raw);
    }
    aims_dataset *tok = NULL;
    if (rc == AIMS_OK) {
        rc = aims_pipeline_transform(p, raw, &tok);
        if (rc != AIMS_OK && rc != AIMS_E_NOMEM) {
            rc = aimsi_err(NULL, rc, "submit: the service's pipeline cannot tokenize \"text\": "
                           "%s", aims_errmsg());
        }
    }
    if (rc == AIMS_OK && aims_dataset_token_dim(tok) == 0) {
        rc = aimsi_err(NULL, AIMS_E_INVAL, "submit: kind=text needs a pipeline that outputs "
                                           "tokens (tokenize + hash); this one outputs features");
    }
    aims_dataset_destroy(raw);
    aimsi_free((void *)starts);
    aimsi_free(lens);
    if (rc != AIMS_OK) {
        aims_dataset_destroy(tok);
        return rc;
    }
    *token_dim = aims_dataset_token_dim(tok);
    *out = tok;
    return AIMS_OK;
}
