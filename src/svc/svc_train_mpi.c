/*
 * svc_train_mpi.c -- a train service whose jobs run on every rank of an MPI
 * job (aims_train_mpi.h, docs/MPI.md "As a train service"): rank 0 is the
 * ordinary train service, ranks 1..N-1 follow in aims_follow_mpi().
 *
 * Why here and not in src/model: the recipe of a job is the service's (the
 * submit's spec text and rows, built into dataset, model and trainer by
 * aimsi_train_build_job, the very code a submit runs), and so are the
 * checkpoints (src/svc/jobs/). MPI itself stays in src/model/train_mpi.c:
 * this file only uses its command channel (aimsi_mpi.h: broadcast from rank
 * 0, agreement) and the trainer's own exchange.
 *
 * The protocol, per job (every rank makes the same collective calls in the
 * same order; rank 0 on the service's job thread, a follower on its main
 * thread):
 *
 *   1. bcast  header {magic, JOB, id_len, spec_len, rows, cols}
 *   2. bcast  id, spec, features (rows x cols f32), labels (rows i32)
 *   3. agree  every rank built the job (rank 0 built it at submit)
 *   4. agree  every rank attached its trainer (aims_trainer_set_mpi)
 *   5. agree  every rank began the run (rank 0: begun AND resumed from its
 *             newest checkpoint, inside aimsi_jobs_fit_sync's hook)
 *   6. bcast  rank 0's trainer state: 8-byte length (NO_STATE: give up),
 *             then the exact-resume checkpoint bytes; followers restore them
 *   7. agree  every rank restored
 *   8. steps  aims_trainer_step on every rank until the run ends
 *
 * A "no" at an agreement ends the job on every rank at the same point (rank 0
 * fails it with a message naming the step; the follower logs its own cause),
 * so no rank is left waiting. The only way out of the steps other than their
 * end is a stop crossing the gradient exchange (train_shard.c): a cancel on
 * rank 0 does that by itself, and when rank 0's fit stops between steps (a
 * cancel from another instance, fencing, a failed checkpoint write),
 * aimsi_train_dist_leave sends the stop in one last exchange. When rank 0's
 * fit fails before step 5, it answers step 5 with "no" itself.
 *
 * Shutdown: rank 0's host calls aims_stop_mpi_followers (header {magic,
 * STOP}) once its services stopped; followers return from aims_follow_mpi.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "aims/aims_dataset.h"
#include "aims/aims_dist.h"
#include "aims/aims_train_mpi.h"
#include "../core/aimsi_core.h"
#include "../model/aimsi_model.h"
#include "../model/aimsi_mpi.h"
#include "aimsi_svckind.h"
#include "jobs/aimsi_jobs.h"
#include "svc_train_impl.h"
#include "train_spec.h"

#define CMD_MAGIC 0x504d4941u /* "AIMP" */
#define NO_STATE UINT64_MAX

enum { CMD_JOB = 1, CMD_STOP = 2 };

typedef struct cmd_hdr {
    uint32_t magic;
    uint32_t cmd;
    uint64_t id_len, spec_len, rows, cols;
} cmd_hdr;

/* ---- rank 0: the train service's job thread ---------------------------------------------- */

/* How far the followers got with rank 0 (see the protocol above). */
enum { AT_BEGIN = 0, AT_AGREED = 1, AT_STEPS = 2 };

typedef struct lead_ctx {
    int at;
} lead_ctx;

/* Steps 5-7 on rank 0, once its trainer is begun (and resumed). */
static aims_status lead_sync(void *user, aims_trainer *t)
{
    lead_ctx *lc = user;
    int all = 0;
    AIMSI_TRY(aimsi_mpi_agree(1, &all));
    lc->at = AT_AGREED;
    if (!all) {
        return aimsi_err(NULL, AIMS_E_BACKEND, "train over MPI: a follower rank could not "
                                               "begin the run (its log says why)");
    }
    void *bytes = NULL;
    size_t len = 0;
    const aims_status rc = aimsi_trainer_checkpoint_bytes(t, &bytes, &len);
    uint64_t n = rc == AIMS_OK ? (uint64_t)len : NO_STATE;
    aims_status b = aimsi_mpi_bcast(&n, sizeof n);
    if (b == AIMS_OK && rc == AIMS_OK) {
        b = aimsi_mpi_bcast(bytes, len);
    }
    aimsi_free(bytes);
    if (b != AIMS_OK || rc != AIMS_OK) {
        return b != AIMS_OK ? b : rc;
    }
    AIMSI_TRY(aimsi_mpi_agree(1, &all));
    if (!all) {
        return aimsi_err(NULL, AIMS_E_BACKEND, "train over MPI: a follower rank could not "
                                               "restore rank 0's trainer state");
    }
    lc->at = AT_STEPS;
    return AIMS_OK;
}

/* Steps 1-2: the recipe. The root's buffers are only read by MPI_Bcast. */
static aims_status send_recipe(const train_job *j, const float *x, const int32_t *y, size_t rows,
                               size_t cols)
{
    cmd_hdr h;
    memset(&h, 0, sizeof h);
    h.magic = CMD_MAGIC;
    h.cmd = CMD_JOB;
    h.id_len = j->id_len;
    h.spec_len = j->spec_len;
    h.rows = rows;
    h.cols = cols;
    AIMSI_TRY(aimsi_mpi_bcast(&h, sizeof h));
    AIMSI_TRY(aimsi_mpi_bcast((void *)(uintptr_t)j->id, j->id_len));
    AIMSI_TRY(aimsi_mpi_bcast(j->spec, j->spec_len));
    AIMSI_TRY(aimsi_mpi_bcast((void *)(uintptr_t)x, rows * cols * sizeof *x));
    return aimsi_mpi_bcast((void *)(uintptr_t)y, rows * sizeof *y);
}

aims_status aimsi_train_mpi_fit(train_impl *ti, train_job *j)
{
    aims_trainer *t = j->trainer;
    if (aims_model_kind_of(j->model) == AIMS_MODEL_KIND_TEXT) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "train over MPI: kind=text trains one "
                                                   "document per step; MPI trains dense kinds");
    }
    const size_t rows = aims_dataset_rows(j->ds);
    const size_t cols = aims_dataset_cols(j->ds);
    const float *x = aims_dataset_features(j->ds);
    const int32_t *y = aims_dataset_labels(j->ds);
    if (x == NULL || y == NULL || j->spec == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "train over MPI: the job has no dense rows with "
                                             "int32 labels to send to the other ranks");
    }
    AIMSI_TRY(send_recipe(j, x, y, rows, cols));
    int all = 0;
    AIMSI_TRY(aimsi_mpi_agree(1, &all)); /* 3: rank 0 built the job at submit */
    if (!all) {
        return aimsi_err(NULL, AIMS_E_BACKEND, "train over MPI: a follower rank could not build "
                                               "the job (its log says why)");
    }
    aims_status rc = aims_trainer_set_mpi(t, 1);
    AIMSI_TRY(aimsi_mpi_agree(rc == AIMS_OK, &all)); /* 4 */
    if (rc != AIMS_OK || !all) {
        return rc != AIMS_OK ? rc : aimsi_err(NULL, AIMS_E_BACKEND, "train over MPI: a follower "
                                              "rank could not attach its trainer to MPI");
    }
    lead_ctx lc = {AT_BEGIN};
    if (ti->durable != NULL) {
        rc = aimsi_jobs_fit_sync(ti->durable, j->id, j->id_len, j->token, t, j->ds, j->ckpt_steps,
                                 j->ckpt_ms, lead_sync, &lc);
    } else {
        rc = aims_trainer_begin(t, j->ds, NULL);
        if (rc == AIMS_OK) {
            rc = lead_sync(&lc, t);
        }
        for (int done = 0; rc == AIMS_OK && !done;) {
            rc = aims_trainer_step(t, &done);
        }
    }
    if (rc != AIMS_OK && lc.at == AT_BEGIN) {
        int ignored = 0;
        (void)aimsi_mpi_agree(0, &ignored); /* 5: the followers wait for rank 0's begin */
    } else if (rc != AIMS_OK && lc.at == AT_STEPS) {
        aimsi_train_dist_leave(t); /* no-op when the stop already crossed the exchange */
    }
    return rc;
}

/* ---- ranks 1..N-1 ------------------------------------------------------------------------ */

typedef struct follow_buf {
    char id[TRAIN_ID_MAX + 1];
    char *spec;
    float *x;
    int32_t *y;
    void *state;
    train_job *j;
} follow_buf;

static void follow_free(follow_buf *b)
{
    if (b->j != NULL) {
        aims_trainer_destroy(b->j->trainer); /* frees its MPI communicator */
        aims_model_destroy(b->j->model);
        aims_dataset_destroy(b->j->ds);
        aimsi_free(b->j);
    }
    aimsi_free(b->spec);
    aimsi_free(b->x);
    aimsi_free(b->y);
    aimsi_free(b->state);
}

/* Step 2 on a follower: room for the recipe, then the bytes. A header that
 * does not fit the caps, or no memory, is the end of this follower (the MPI
 * job is then ended by mpirun): it cannot take part in the broadcasts. */
static aims_status take_recipe(const cmd_hdr *h, follow_buf *b)
{
    if (h->id_len == 0 || h->id_len > TRAIN_ID_MAX || h->spec_len == 0 ||
        h->spec_len > TRAIN_SPEC_MAX || h->rows == 0 || h->cols == 0 ||
        h->cols > SIZE_MAX / sizeof(float) / h->rows) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "aims_follow_mpi: a job header out of bounds "
                         "(id %" PRIu64 " bytes, spec %" PRIu64 " bytes, %" PRIu64 " x %" PRIu64
                         " rows)", h->id_len, h->spec_len, h->rows, h->cols);
    }
    const size_t rows = (size_t)h->rows;
    const size_t cols = (size_t)h->cols;
    b->spec = aimsi_malloc((size_t)h->spec_len + 1);
    b->x = aimsi_malloc(rows * cols * sizeof *b->x);
    b->y = aimsi_malloc(rows * sizeof *b->y);
    if (b->spec == NULL || b->x == NULL || b->y == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_follow_mpi: no memory for a job of %zu x %zu "
                         "rows", rows, cols);
    }
    AIMSI_TRY(aimsi_mpi_bcast(b->id, (size_t)h->id_len));
    b->id[h->id_len] = '\0';
    AIMSI_TRY(aimsi_mpi_bcast(b->spec, (size_t)h->spec_len));
    b->spec[h->spec_len] = '\0';
    AIMSI_TRY(aimsi_mpi_bcast(b->x, rows * cols * sizeof *b->x));
    return aimsi_mpi_bcast(b->y, rows * sizeof *b->y);
}

/* Steps 3-4: build the job as the service did, attach to MPI. *all = 0
 * when some rank could not; AIMS_E_BACKEND only when MPI failed. */
static aims_status build_attach(const cmd_hdr *h, follow_buf *b, int *all, char *why,
                                size_t why_cap)
{
    submit_in in;
    memset(&in, 0, sizeof in);
    in.x = b->x;
    in.y = b->y;
    in.rows = (size_t)h->rows;
    in.cols = (size_t)h->cols;
    in.spec = b->spec;
    in.spec_len = (size_t)h->spec_len;
    b->j = aimsi_calloc(1, sizeof *b->j);
    aims_status rc = b->j == NULL ? aimsi_err(NULL, AIMS_E_NOMEM, "no memory")
                                  : aimsi_train_build_job(NULL, &in, b->j);
    if (rc != AIMS_OK) {
        snprintf(why, why_cap, "building the job: %s", aims_errmsg());
    }
    AIMSI_TRY(aimsi_mpi_agree(rc == AIMS_OK, all));
    if (!*all) {
        return AIMS_OK;
    }
    rc = aims_trainer_set_mpi(b->j->trainer, 1);
    if (rc != AIMS_OK) {
        snprintf(why, why_cap, "aims_trainer_set_mpi: %s", aims_trainer_errmsg(b->j->trainer));
    }
    return aimsi_mpi_agree(rc == AIMS_OK, all);
}

/* Steps 5-7: begin, take rank 0's state. */
static aims_status begin_sync(follow_buf *b, int *all, char *why, size_t why_cap)
{
    aims_trainer *t = b->j->trainer;
    aims_status rc = aims_trainer_begin(t, b->j->ds, NULL);
    if (rc != AIMS_OK) {
        snprintf(why, why_cap, "begin: %s", aims_trainer_errmsg(t));
    }
    AIMSI_TRY(aimsi_mpi_agree(rc == AIMS_OK, all));
    if (!*all) {
        return AIMS_OK;
    }
    uint64_t n = 0;
    AIMSI_TRY(aimsi_mpi_bcast(&n, sizeof n));
    if (n == NO_STATE || n > SIZE_MAX) {
        snprintf(why, why_cap, "rank 0 could not send its trainer state");
        *all = 0;
        return AIMS_OK;
    }
    b->state = aimsi_malloc(n > 0 ? (size_t)n : 1);
    if (b->state == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "aims_follow_mpi: no memory for a %" PRIu64
                         "-byte trainer state", n);
    }
    AIMSI_TRY(aimsi_mpi_bcast(b->state, (size_t)n));
    rc = aimsi_trainer_restore_bytes(t, b->state, (size_t)n);
    if (rc != AIMS_OK) {
        snprintf(why, why_cap, "restoring rank 0's trainer state: %s", aims_errmsg());
    }
    return aimsi_mpi_agree(rc == AIMS_OK, all);
}

/* One job on a follower. Returns an error only when this follower cannot go
 * on (MPI failed, no memory for the rows); a job that fails is logged. */
static aims_status follow_job(const cmd_hdr *h, int rank)
{
    follow_buf b;
    memset(&b, 0, sizeof b);
    char why[AIMSI_ERRMSG_CAP] = "";
    int all = 0;
    aims_status rc = take_recipe(h, &b);
    if (rc == AIMS_OK) {
        rc = build_attach(h, &b, &all, why, sizeof why);
    }
    if (rc == AIMS_OK && all) {
        rc = begin_sync(&b, &all, why, sizeof why);
    }
    aims_status fit = AIMS_OK;
    int64_t steps = 0;
    for (int done = 0; rc == AIMS_OK && all && !done;) {
        fit = aims_trainer_step(b.j->trainer, &done);
        if (fit != AIMS_OK) {
            snprintf(why, sizeof why, "%s", aims_trainer_errmsg(b.j->trainer));
            break;
        }
        steps++;
    }
    if (rc == AIMS_OK && all && fit == AIMS_OK) {
        aimsi_log(AIMS_LOG_INFO, "train over MPI: rank %d: job %s done (%" PRId64 " steps)",
                  rank, b.id, steps);
    } else if (rc == AIMS_OK) {
        aimsi_log(fit == AIMS_E_CANCELLED ? AIMS_LOG_INFO : AIMS_LOG_WARN,
                  "train over MPI: rank %d: job %s ended with the other ranks: %s", rank, b.id,
                  why[0] != '\0' ? why : "another rank could not go on");
    }
    follow_free(&b);
    return rc;
}

aims_status aims_follow_mpi(void)
{
    int rank = 0;
    int size = 1;
    AIMSI_TRY(aimsi_mpi_world(&rank, &size));
    if (rank == 0) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_follow_mpi: rank 0 leads (it hosts the train "
                                             "service); ranks 1..%d follow", size - 1);
    }
    aimsi_log(AIMS_LOG_INFO, "train over MPI: rank %d of %d follows rank 0", rank, size);
    for (;;) {
        cmd_hdr h;
        memset(&h, 0, sizeof h);
        AIMSI_TRY(aimsi_mpi_bcast(&h, sizeof h));
        if (h.magic != CMD_MAGIC || (h.cmd != CMD_JOB && h.cmd != CMD_STOP)) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "aims_follow_mpi: not a command (magic "
                             "%08" PRIx32 ", command %" PRIu32 ")", h.magic, h.cmd);
        }
        if (h.cmd == CMD_STOP) {
            aimsi_log(AIMS_LOG_INFO, "train over MPI: rank %d: rank 0 says stop", rank);
            return AIMS_OK;
        }
        AIMSI_TRY(follow_job(&h, rank));
    }
}

aims_status aims_stop_mpi_followers(void)
{
    int rank = 0;
    int size = 1;
    AIMSI_TRY(aimsi_mpi_world(&rank, &size));
    if (rank != 0) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_stop_mpi_followers: only rank 0 may (this "
                                             "is rank %d)", rank);
    }
    cmd_hdr h;
    memset(&h, 0, sizeof h);
    h.magic = CMD_MAGIC;
    h.cmd = CMD_STOP;
    return aimsi_mpi_bcast(&h, sizeof h);
}

aims_status aims_service_set_mpi(aims_service *s, int enable)
{
    if (s == NULL) {
        return AIMSI_MISUSE("NULL service");
    }
    train_impl *ti = aimsi_service_impl(s, &aimsi_kind_train);
    if (ti == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "aims_service_set_mpi: %s is not a train service",
                         aimsi_service_name(s));
    }
    int rank = 0;
    int size = 1;
    if (enable) {
        AIMSI_TRY(aimsi_mpi_world(&rank, &size));
        if (rank != 0) {
            return aimsi_err(NULL, AIMS_E_STATE, "aims_service_set_mpi: rank 0 hosts the "
                             "service; rank %d must run aims_follow_mpi", rank);
        }
    }
    pthread_mutex_lock(&ti->mu);
    const int late = ti->n_jobs > 0;
    if (!late) {
        ti->mpi = enable != 0;
    }
    pthread_mutex_unlock(&ti->mu);
    if (late) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_service_set_mpi: set it before the first "
                                             "submit");
    }
    if (enable) {
        aimsi_log(AIMS_LOG_INFO, "train over MPI: service %s trains on %d rank(s)",
                  aimsi_service_name(s), size);
    }
    return AIMS_OK;
}
