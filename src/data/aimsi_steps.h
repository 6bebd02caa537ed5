/*
 * aimsi_steps.h -- the pipeline object's layout, shared by pipeline.c (object,
 * parameters), pipeline_file.c (files), steps_num.c (numeric steps) and
 * steps_text.c (text steps).
 *
 * Private to these four files. A pipeline holds at most AIMSI_MAX_STEPS steps
 * in a fixed array (adding a step never allocates). Each step keeps its
 * parameters as doubles indexed by (param - AIMS_STEP_COL_BEGIN) -- every i64
 * parameter is bounded by 2^53, so a double holds it exactly -- and, once
 * fitted, its resolved column range, its widths and its learned arrays.
 */
#ifndef AIMSI_STEPS_H
#define AIMSI_STEPS_H

#include "aimsi_data.h"

#define AIMSI_MAX_STEPS 64
#define AIMSI_NSTEP_PARAMS 18 /* AIMS_STEP_COL_BEGIN .. AIMS_STEP_PUNCT */
/* Widest dense row a pipeline accepts or produces; keeps per-column arrays and
 * one-hot expansions bounded (also for files read from outside). */
#define AIMSI_MAX_WIDTH ((size_t)1 << 26)

enum { AIMSI_FAMILY_NONE = 0, AIMSI_FAMILY_NUM = 1, AIMSI_FAMILY_TEXT = 2 };

typedef struct aimsi_step {
    aims_step_kind kind;
    double pv[AIMSI_NSTEP_PARAMS];

    /* fitted state (numeric): columns [c0, c1) of an in_w-wide input */
    size_t in_w, out_w, c0, c1;
    double *a;     /* STANDARDIZE mean, MINMAX data min, IMPUTE fill value */
    double *b;     /* STANDARDIZE 1/std, MINMAX scale */
    uint32_t *cat; /* ONEHOT categories per selected column */

    /* fitted state (text): TFIDF */
    uint32_t *df;  /* document frequency per bucket */
    double *idf;   /* idf per bucket, derived from df */
    uint64_t ndocs;
} aimsi_step;

struct aims_pipeline {
    aimsi_obj obj;
    int family;
    size_t nsteps;
    aimsi_step steps[AIMSI_MAX_STEPS];
    int fitted;
    size_t in_w, out_w; /* numeric: fitted input/output widths; text: out_w = buckets */
    int64_t threads;    /* AIMS_PIPELINE_THREADS */
    aimsi_pool *pool;   /* NULL when running on one thread */
};

/* Parameter value of a step. */
static inline double aimsi_sp(const aimsi_step *s, aims_param param)
{
    return s->pv[(int)param - (int)AIMS_STEP_COL_BEGIN];
}

/* Thread count the pipeline runs with (>= 1). */
unsigned aimsi_pipe_nthreads(const aims_pipeline *p);

/* ---- pipeline rules shared by pipeline.c and pipeline_file.c ---- */

int aimsi_pipe_is_num_kind(int k);
const char *aimsi_pipe_step_name(int k);
/* May a step of `kind` follow steps[0..n)? Returns NULL or the reason. */
const char *aimsi_pipe_add_refusal(const aimsi_step *steps, size_t n, int kind);
void aimsi_pipe_step_defaults(aimsi_step *s, aims_step_kind kind);
/* Make the pool match the threads parameter (exclusive-access calls only). */
aims_status aimsi_pipe_sync_pool(aims_pipeline *p);
/* Non-zero when a text pipeline holds a complete TOKENIZE ... HASH chain. */
int aimsi_pipe_text_complete(const aims_pipeline *p);

/* Release a step's fitted arrays (keeps kind and parameters). */
void aimsi_step_clear(aimsi_step *s);

/* ---- numeric (steps_num.c) ---- */

/* Fit steps 0..nsteps-1 on rows x rows*cols. On failure the steps may hold
 * partial state; the caller clears it. Errors recorded on p. */
aims_status aimsi_num_fit(aims_pipeline *p, const float *x, size_t rows, size_t cols);
/* Transform rows into out (rows * p->out_w). check: validate non-finite input
 * for the steps that refuse it. Errors go to the thread-local message only.
 * out is untouched on error. */
aims_status aimsi_num_transform(const aims_pipeline *p, const float *x, size_t rows, float *out,
                                int check);
/* Non-zero when fit already refused non-finite input for every step that
 * refuses it (so fit_transform may skip the transform-time check). */
int aimsi_num_fit_checked_all(const aims_pipeline *p);

/* ---- text (steps_text.c) ---- */

typedef struct aimsi_textsrc {
    const char *const *texts; /* transform_texts form ... */
    const size_t *lens;
    const aims_dataset *ds;   /* ... or the text part of a dataset */
} aimsi_textsrc;

aims_status aimsi_text_fit(aims_pipeline *p, const aimsi_textsrc *src, size_t rows);
/* Build the token part of out (rows must already be set, tok fields NULL). */
aims_status aimsi_text_transform(const aims_pipeline *p, const aimsi_textsrc *src, size_t rows,
                                 aims_dataset *out);
/* fit + transform in one tokenising pass (errors recorded on p). */
aims_status aimsi_text_fit_transform(aims_pipeline *p, const aimsi_textsrc *src, size_t rows,
                                     aims_dataset *out);
/* Recompute idf from df/ndocs for a TFIDF step (allocates s->idf). */
aims_status aimsi_text_idf(aimsi_step *s, size_t buckets);
/* MurmurHash3_x86_32, exposed for the unit tests' golden values. */
uint32_t aimsi_murmur3_32(const void *key, size_t len, uint32_t seed);

#endif /* AIMSI_STEPS_H */
