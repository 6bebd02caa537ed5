/*
 * svc_train.c -- the built-in train service kind (aims_service_add_train).
 *
 * Training takes seconds to minutes, so a request never trains: "submit"
 * checks everything it can on the worker thread that runs it (job id, "x",
 * "y", every "spec" key, model and trainer parameters -- by actually building
 * the dataset copy, the model and the trainer), queues the job and replies
 * "queued" at once. One job thread per service, started on the first submit,
 * runs ONE job at a time in submission order; callers poll "status" and
 * fetch "result". Running one job at a time is deliberate: a fit already uses
 * the cores through OpenBLAS, and two fits at once would only slow both.
 *
 * Jobs are keyed by the caller's job id, so a retried submit (the client
 * retries idempotent calls; a submit may also be repeated by a host that
 * lost the reply) finds the job it already created and returns its state:
 * the lookup happens before any work and again under the lock right before
 * the insert, so even two racing submits of one id create one job.
 *
 * Job secrets. Job ids are the caller's names ("fmnist-1") and easy to
 * guess, so a job is reached by its id AND its secret handle: submit replies
 * "handle" (32 hex characters from getrandom, or the caller's own "handle"
 * tensor of 16..64 bytes, which lets a caller whose submit reply was lost
 * retry and still learn nothing new), and status, result and cancel need that
 * "handle" tensor back (else AIMS_E_DENIED; compared in constant time). A
 * repeated submit of a known id without the handle gets the job's state only.
 * An authenticated submitter also owns its job: status, result and cancel
 * from another identity are denied even with the handle (svc_ident.c).
 *
 * Memory is bounded: at most TRAIN_QUEUE_MAX jobs wait (then
 * AIMS_E_OVERLOADED with a retry hint), and at most TRAIN_JOBS_KEPT jobs are
 * remembered; beyond that the oldest finished job (and its result bundle)
 * is forgotten. A queued job holds its data copy, model and trainer; a
 * finished one only its numbers and, when done, its bundle bytes.
 *
 * Cancellation: "cancel" on a queued job ends it at once; on the running job
 * it calls aims_trainer_cancel (any thread) and the progress callback also
 * returns non-zero, so the fit stops at the next step boundary and the job
 * ends "cancelled". kind->stop cancels the running job and everything queued
 * and joins the thread (aims_service_stop; the service may be started again,
 * the next submit starts a new thread). All job state is under one mutex;
 * the trainer pointer of the running job is cleared under it before the
 * trainer is destroyed, so cancel never touches a dead trainer.
 *
 * The result is the bytes of an aims bundle file (pipeline + model).
 * The job thread itself is in svc_train_run.c, the job table's types in
 * svc_train_impl.h.
 *
 * Durable jobs (docs/JOBS.md). With a store (aims_service_set_store) every
 * job is also kept in it (src/svc/jobs/): the fit checkpoints there, another
 * instance adopts the job when this one dies, and status/result/cancel of a
 * job this instance does not hold (or handed over: `moved`) are answered from
 * the store. A job then carries its fencing token; "put_data" stores rows by
 * content and a submit may name them ("data") instead of shipping them.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "../model/aimsi_model.h"
#include "aimsi_msg.h"
#include "aimsi_svckind.h"
#include "authz/aimsi_authz.h"
#include "jobs/aimsi_jobs.h"
#include "aimsi_life.h"
#include "aimsi_news.h"
#include "aimsi_ident.h"
#include "svc_train_text.h"
#include "train_spec.h"
#include "svc_train_impl.h"

/* ---- replies ------------------------------------------------------------------------- */

static aims_status put_i32(aims_msg *m, const char *name, int32_t v)
{
    return aims_msg_add(m, name, AIMS_DT_I32, NULL, 0, &v, 0);
}

static aims_status put_f32(aims_msg *m, const char *name, float v)
{
    return aims_msg_add(m, name, AIMS_DT_F32, NULL, 0, &v, 0);
}

static aims_status reply_state_handle(aimsi_work *w, int state, const char *h, size_t hlen)
{
    aims_msg_clear(w->reply);
    aims_status st = put_i32(w->reply, "state", state);
    if (st == AIMS_OK && h != NULL) {
        st = aimsi_msg_put_bytes(w->reply, "handle", h, hlen);
    }
    if (st != AIMS_OK) {
        return aimsi_work_fail(w, st, "train: no room for the reply: %s", aims_errmsg());
    }
    return AIMS_OK;
}

static aims_status reply_state(aimsi_work *w, int state)
{
    return reply_state_handle(w, state, NULL, 0);
}

/* The request's "handle" tensor: 0 when absent, 1 when well formed, -1 bad. */
static int req_handle(const aims_msg *m, const char **h, size_t *len)
{
    if (aimsi_msg_bytes(m, "handle", h, len) != AIMS_OK) {
        return 0;
    }
    return *len >= TRAIN_HANDLE_MIN && *len <= TRAIN_HANDLE_MAX && memchr(*h, 0, *len) == NULL
               ? 1 : -1;
}

/* Does the request carry job j's handle, from its owner? (under the lock) */
static int job_handle_ok(const train_job *j, const aimsi_work *w)
{
    const char *h = NULL;
    size_t len = 0;
    const aims_msg *m = w->req;
    return (req_handle(m, &h, &len) == 1 && aimsi_secret_equal(j->handle, j->handle_len, h, len) &&
            aimsi_job_owner_ok(j->owner, w->caller)) ||
           aimsi_authz_admin(m); /* a policy admin, marked by the node's door */
}

#define JOB_DENIED(w, what, id, len)                                                          \
    aimsi_work_fail((w), AIMS_E_DENIED, "%s: job %.*s: wrong or missing \"handle\" (the secret " \
                    "its submit returned), or not the identity that submitted it", (what),    \
                    (int)(len), (id))

/* ---- jobs ------------------------------------------------------------------------------ */

static void job_release_work(train_job *j)
{
    aims_trainer_destroy(j->trainer);
    j->trainer = NULL;
    aims_model_destroy(j->model);
    j->model = NULL;
    aims_dataset_destroy(j->ds);
    j->ds = NULL;
}

static void job_free(train_job *j)
{
    job_release_work(j);
    aimsi_free(j->spec);
    aimsi_free(j->publish);
    aimsi_free(j->bundle);
    aimsi_free(j);
}

static train_job *job_find(const train_impl *ti, const char *id, size_t len)
{
    for (train_job *j = ti->jobs; j != NULL; j = j->next) {
        if (j->id_len == len && memcmp(j->id, id, len) == 0) {
            return j;
        }
    }
    return NULL;
}

/* Tell event watchers what changed (svc_news.c). Takes news_mu then mu: the
 * registry round trips happen outside mu, and the posts of a job stay in order. */
void aimsi_train_job_news(train_impl *ti, const char *id, size_t id_len)
{
    char jid[TRAIN_ID_MAX], detail[AIMSI_ERRMSG_CAP];
    memcpy(jid, id, id_len); /* the caller's id may live in a job that is forgotten */
    pthread_mutex_lock(&ti->news_mu);
    pthread_mutex_lock(&ti->mu);
    train_job *j = ti->node != NULL ? job_find(ti, jid, id_len) : NULL;
    j = j != NULL && !j->moved ? j : NULL; /* handed over: the adopting instance tells */
    aimsi_job_news news = {0};
    const int state = j != NULL ? j->state : 0, adopted = j != NULL && j->adopted;
    const int32_t epoch = j != NULL ? j->epoch : 0;
    const float loss = j != NULL ? j->loss : 0.0f;
    if (j != NULL) {
        news = j->news;
        snprintf(detail, sizeof detail, "%s", j->state == JOB_FAILED ? j->err : j->pubnote);
    }
    pthread_mutex_unlock(&ti->mu);
    if (j != NULL) {
        aimsi_news_job_step(ti->node, ti->name, jid, id_len, state, epoch, loss, adopted, detail,
                            &news);
        pthread_mutex_lock(&ti->mu);
        j = job_find(ti, jid, id_len);
        if (j != NULL) {
            j->news = news;
        }
        pthread_mutex_unlock(&ti->mu);
    }
    pthread_mutex_unlock(&ti->news_mu);
}

/* Forget the oldest finished job when the table is full (under the lock). */
static void jobs_trim(train_impl *ti)
{
    if (ti->n_jobs < TRAIN_JOBS_KEPT) {
        return;
    }
    train_job **pp = &ti->jobs;
    while (*pp != NULL && (*pp)->state < JOB_DONE) {
        pp = &(*pp)->next;
    }
    if (*pp != NULL) {
        train_job *old = *pp;
        *pp = old->next;
        ti->n_jobs--;
        job_free(old);
    }
}

/* Remove a queued job from the run queue (under the lock). */
void aimsi_train_queue_remove(train_impl *ti, train_job *j)
{
    train_job *prev = NULL;
    for (train_job *q = ti->qhead; q != NULL; prev = q, q = q->qnext) {
        if (q == j) {
            if (prev == NULL) {
                ti->qhead = q->qnext;
            } else {
                prev->qnext = q->qnext;
            }
            if (ti->qtail == q) {
                ti->qtail = prev;
            }
            q->qnext = NULL;
            ti->queued--;
            return;
        }
    }
}

/* ---- submit ------------------------------------------------------------------------------- */

static aims_status job_id(aimsi_work *w, const char **id, size_t *len)
{
    const uint64_t *dims = NULL;
    const void *data = NULL;
    size_t bytes = 0;
    if (!aimsi_train_get_tensor(w->req, "job", AIMS_DT_BYTES, 1, &dims, &data, &bytes) ||
        bytes == 0 || bytes > TRAIN_ID_MAX || memchr(data, '\0', bytes) != NULL) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "train %s: \"job\" must be a BYTES id of 1..%d bytes "
                                     "without NUL", w->method, TRAIN_ID_MAX);
    }
    *id = data;
    *len = bytes;
    return AIMS_OK;
}

static aims_status apply_params(train_job *j, const train_spec *sp)
{
    for (size_t i = 0; i < sp->n_params; i++) {
        const spec_param *q = &sp->params[i];
        aims_status rc;
        if (q->param < 500) {
            rc = q->type == AIMS_PARAM_TYPE_I64 ? aims_model_set_param_i64(j->model, q->param, q->i)
                                           : aims_model_set_param_f64(j->model, q->param, q->f);
        } else {
            rc = q->type == AIMS_PARAM_TYPE_I64
                     ? aims_trainer_set_param_i64(j->trainer, q->param, q->i)
                     : aims_trainer_set_param_f64(j->trainer, q->param, q->f);
        }
        if (rc == AIMS_E_NOMEM) {
            return rc;
        }
        if (rc != AIMS_OK) {
            return SPEC_BAD("%s: %s", q->key, aims_errmsg());
        }
    }
    return AIMS_OK;
}

/* Dataset, model and trainer of a job from its inputs (also the MPI
 * followers' way to build the job rank 0 sent them: svc_train_mpi.c). */
aims_status aimsi_train_build_job(const aims_pipeline *p, const submit_in *in, train_job *j)
{
    train_spec sp;
    AIMSI_TRY(aimsi_train_spec_parse(in->spec, in->spec_len, &sp));
    const int text = sp.kind == AIMS_MODEL_KIND_TEXT;
    if (text != (in->text != NULL)) {
        return aimsi_err(NULL, AIMS_E_INVAL, text ? "submit: kind=text takes \"text\" (BYTES, "
                                                    "'\\n'-separated documents), not \"x\""
                                                  : "submit: \"text\" is for kind=text; "
                                                    "this kind takes \"x\"");
    }
    size_t pcols = in->cols;
    if (!text && p != NULL && aims_pipeline_output_cols(p, &pcols) == AIMS_OK &&
        pcols != in->cols) {
        /* caught now rather than by aims_bundle_create after the whole fit */
        return aimsi_err(NULL, AIMS_E_INVAL, "submit: \"x\" has %zu columns but the service's "
                                             "pipeline outputs %zu", in->cols, pcols);
    }
    int32_t ymax = in->ymax; /* rows from the row cache were checked when cached */
    if (in->ds == NULL) {
        AIMSI_TRY(aimsi_train_check_rows(in->x, in->y, in->rows, in->cols, &ymax));
    }
    size_t out_dim = 1;
    if (sp.kind == AIMS_MODEL_KIND_SOFTMAX || sp.kind == AIMS_MODEL_KIND_MLP || text) {
        out_dim = sp.classes != 0 ? sp.classes : (size_t)ymax + 1;
        if ((size_t)ymax >= out_dim) {
            return SPEC_BAD("classes=%zu but \"y\" holds label %d", out_dim, (int)ymax);
        }
    } else if (sp.kind == AIMS_MODEL_KIND_LOGISTIC) {
        if (sp.classes != 0 && sp.classes != 2) {
            return SPEC_BAD("classes=%zu: kind=logistic has 2 classes", sp.classes);
        }
        if (ymax > 1) {
            return aimsi_err(NULL, AIMS_E_INVAL, "submit: kind=logistic needs labels 0/1, "
                                                 "\"y\" holds %d", (int)ymax);
        }
    } else if (sp.classes != 0) {
        return SPEC_BAD("classes: kind=linear predicts one target");
    }
    size_t in_dim = in->cols;
    aims_status rc = text ? aimsi_train_text_data(p, in->text, in->text_len, in->y, in->rows,
                                                  &j->ds, &in_dim)
                          : in->ds != NULL ? aims_dataset_view(in->ds, 0, in->rows, &j->ds)
                          : aims_dataset_create_dense(in->rows, in->cols, in->x, in->y, &j->ds);
    if (rc == AIMS_OK) {
        rc = aims_model_create(sp.kind, in_dim, out_dim, &j->model);
    }
    for (size_t i = 0; rc == AIMS_OK && i < sp.n_hidden; i++) {
        rc = aims_model_add_dense(j->model, sp.hidden[i], sp.act);
    }
    if (rc == AIMS_OK) {
        rc = aims_trainer_create(j->model, &j->trainer);
    }
    if (rc == AIMS_OK) {
        rc = apply_params(j, &sp);
    }
    j->ckpt_steps = sp.ckpt_steps;
    j->ckpt_ms = sp.ckpt_ms;
    return rc;
}

static aims_status start_thread_locked(train_impl *ti)
{
    if (ti->thread_on) {
        return AIMS_OK;
    }
    if (pthread_create(&ti->thread, NULL, aimsi_train_job_thread, ti) != 0) {
        return aimsi_err(NULL, AIMS_E_BACKEND, "train: cannot start the job thread");
    }
    ti->thread_on = 1;
    return AIMS_OK;
}

/* A submit (token 0) or, with a store, the adoption of a stored job under
 * fencing token `token` (its stored submit is w->req). */
static aims_status do_submit(train_impl *ti, aimsi_work *w, uint64_t token)
{
    const char *id = NULL;
    size_t id_len = 0;
    AIMSI_TRY(job_id(w, &id, &id_len));
    const char *h = NULL;
    size_t h_len = 0;
    const int has_h = req_handle(w->req, &h, &h_len);
    if (has_h < 0) {
        return aimsi_work_fail(w, AIMS_E_INVAL, "submit: \"handle\" must be BYTES of %d..%d "
                               "bytes without NUL", TRAIN_HANDLE_MIN, TRAIN_HANDLE_MAX);
    }
    pthread_mutex_lock(&ti->mu);
    train_job *known = job_find(ti, id, id_len);
    if (token > 0 && known != NULL && known->state >= JOB_DONE) {
        known->id_len = 0; /* re-adopted: the old entry is found no more (trimmed later) */
        known = NULL;
    }
    int state = known != NULL ? known->state : -1;
    const int owner = known != NULL && job_handle_ok(known, w);
    char known_handle[TRAIN_HANDLE_MAX + 1];
    const size_t known_len = owner ? known->handle_len : 0;
    if (owner) {
        memcpy(known_handle, known->handle, known_len);
    }
    pthread_mutex_unlock(&ti->mu);
    if (state < 0 && token == 0 && ti->durable != NULL) {
        state = aimsi_jobs_state(ti->durable, id, id_len); /* submitted on another instance */
    }
    if (state >= 0) {
        /* a retried submit: never a second job; the handle only to its holder */
        return reply_state_handle(w, state, owner ? known_handle : NULL, known_len);
    }
    train_job *j = aimsi_calloc(1, sizeof *j);
    if (j == NULL) {
        return aimsi_work_fail(w, AIMS_E_NOMEM, "submit: no memory for the job");
    }
    memcpy(j->id, id, id_len);
    j->id_len = id_len;
    aimsi_job_owner_set(j->owner, sizeof j->owner, w->caller);
    if (has_h) {
        memcpy(j->handle, h, h_len);
        j->handle_len = h_len;
    } else if (aimsi_secret_hex(j->handle) != AIMS_OK) {
        aimsi_free(j);
        return aimsi_work_fail(w, AIMS_E_BACKEND, "submit: %s", aims_errmsg());
    } else {
        j->handle_len = AIMSI_SECRET_HEX;
    }
    char handle[TRAIN_HANDLE_MAX + 1];
    size_t handle_len = j->handle_len;
    memcpy(handle, j->handle, handle_len);
    j->loss = NAN;
    j->metric = NAN;
    submit_in in;
    memset(&in, 0, sizeof in);
    void *tx = NULL;
    void *ty = NULL;
    aims_msg *rows = NULL; /* "data" by reference: the stored rows, or in.ds (row cache) */
    size_t didx = 0;
    aims_status rc = aims_msg_find(w->req, "data", &didx) != AIMS_OK ? AIMS_OK
                     : ti->durable != NULL ? aimsi_jobs_data_get(ti->durable, w->req, &rows,
                                                                 &in.ds, &in.ymax)
                     : aimsi_err(NULL, AIMS_E_STATE, "submit: \"data\" by reference needs a "
                                 "train service with a store (aims_service_set_store)");
    if (rc == AIMS_OK) {
        rc = aimsi_train_read_inputs(w, rows != NULL ? rows : w->req, &in, &tx, &ty);
    }
    if (rc == AIMS_OK) {
        rc = aimsi_train_build_job(ti->p, &in, j);
    }
    if (rc == AIMS_OK && ti->mpi) { /* the recipe MPI followers get (svc_train_mpi.c) */
        j->spec = aimsi_malloc(in.spec_len + 1);
        rc = j->spec == NULL ? aimsi_err(NULL, AIMS_E_NOMEM, "submit: no memory") : AIMS_OK;
        if (rc == AIMS_OK) {
            memcpy(j->spec, in.spec, in.spec_len);
            j->spec[in.spec_len] = '\0';
            j->spec_len = in.spec_len;
        }
    }
    aimsi_free(tx);
    aimsi_free(ty);
    aims_msg_destroy(rows);
    aims_dataset_destroy(in.ds);
    size_t pidx = 0;
    if (rc == AIMS_OK && aims_msg_find(w->req, "publish", &pidx) == AIMS_OK) {
        const void *pub = NULL;
        size_t pb = 0;
        aims_dtype dt = 0;
        (void)aims_msg_get_tensor(w->req, pidx, NULL, &dt, NULL, NULL, &pub, &pb);
        if (dt != AIMS_DT_BYTES || pb == 0 || pb > 128 || memchr(pub, '\0', pb) != NULL) {
            rc = aimsi_err(NULL, AIMS_E_INVAL, "submit: \"publish\" must be BYTES "
                                               "\"name@version\" of 1..128 bytes");
        } else {
            j->publish = aimsi_strndup(pub, pb);
            rc = j->publish == NULL ? aimsi_err(NULL, AIMS_E_NOMEM, "submit: no memory")
                                    : aimsi_life_publish_canary(w->req, &j->publish_canary);
        }
    }
    j->token = token;
    j->adopted = token != 0;
    if (rc == AIMS_OK && ti->durable != NULL && token == 0) {
        rc = aimsi_jobs_begin(ti->durable, w->req, handle, handle_len, &j->token);
        if (rc == AIMS_E_EXISTS) { /* a racing submit of this id on another instance */
            job_free(j);
            state = aimsi_jobs_state(ti->durable, id, id_len);
            return reply_state(w, state >= 0 ? state : JOB_QUEUED);
        }
    }
    if (rc != AIMS_OK) {
        job_free(j);
        return aimsi_work_fail(w, rc, "%s", aims_errmsg());
    }
    pthread_mutex_lock(&ti->mu);
    const train_job *raced = job_find(ti, id, id_len);
    int reply = JOB_QUEUED;
    int give = 1;
    if (raced != NULL) {
        reply = raced->state;
        give = job_handle_ok(raced, w);
        memcpy(handle, raced->handle, raced->handle_len); /* the job that won */
        handle_len = raced->handle_len;
    } else if (ti->stopping) {
        rc = aimsi_err(NULL, AIMS_E_CLOSED, "submit: the train service is stopping");
    } else if (ti->queued >= TRAIN_QUEUE_MAX) {
        rc = aimsi_err(NULL, AIMS_E_OVERLOADED, "submit: %d jobs already queued; retry after "
                                                "%d ms", TRAIN_QUEUE_MAX, TRAIN_RETRY_MS);
    } else {
        rc = start_thread_locked(ti);
    }
    if (rc == AIMS_OK && raced == NULL) {
        jobs_trim(ti);
        train_job **pp = &ti->jobs;
        while (*pp != NULL) {
            pp = &(*pp)->next;
        }
        *pp = j;
        ti->n_jobs++;
        if (ti->qtail != NULL) {
            ti->qtail->qnext = j;
        } else {
            ti->qhead = j;
        }
        ti->qtail = j;
        ti->queued++;
        j = NULL;
        pthread_cond_broadcast(&ti->cv);
    }
    pthread_mutex_unlock(&ti->mu);
    if (j != NULL && ti->durable != NULL && rc != AIMS_OK && token == 0) {
        /* recorded in the store but not queued here: nobody must adopt it */
        aimsi_jobs_end(ti->durable, id, id_len, j->token, JOB_FAILED, aims_errmsg());
    }
    if (j != NULL) {
        job_free(j);
    } else {
        aimsi_train_job_news(ti, id, id_len); /* queued */
    }
    if (rc != AIMS_OK) {
        return aimsi_work_fail(w, rc, "%s", aims_errmsg());
    }
    return reply_state_handle(w, reply, give ? handle : NULL, handle_len);
}

/* ---- status / result / cancel -------------------------------------------------------------- */

static aims_status do_status(train_impl *ti, aimsi_work *w)
{
    const char *id = NULL;
    size_t id_len = 0;
    AIMSI_TRY(job_id(w, &id, &id_len));
    pthread_mutex_lock(&ti->mu);
    const train_job *j = job_find(ti, id, id_len);
    if (j == NULL) {
        pthread_mutex_unlock(&ti->mu);
        return aimsi_work_fail(w, AIMS_E_NOTFOUND, "status: no job %.*s", (int)id_len, id);
    }
    if (!job_handle_ok(j, w)) {
        pthread_mutex_unlock(&ti->mu);
        return JOB_DENIED(w, "status", id, id_len);
    }
    const int state = j->state;
    const int32_t epoch = j->epoch;
    const float loss = j->loss;
    const float metric = j->metric;
    char err[AIMSI_ERRMSG_CAP], pubnote[AIMSI_ERRMSG_CAP];
    memcpy(err, j->err, sizeof err);
    memcpy(pubnote, j->pubnote, sizeof pubnote);
    pthread_mutex_unlock(&ti->mu);
    aims_msg_clear(w->reply);
    aims_status rc = put_i32(w->reply, "state", state);
    if (rc == AIMS_OK) {
        rc = put_i32(w->reply, "epoch", epoch);
    }
    if (rc == AIMS_OK) {
        rc = put_f32(w->reply, "loss", loss);
    }
    if (rc == AIMS_OK) {
        rc = put_f32(w->reply, "metric", metric);
    }
    if (rc == AIMS_OK && state == JOB_FAILED) {
        const uint64_t n = strlen(err);
        rc = aims_msg_add(w->reply, "error", AIMS_DT_BYTES, &n, 1, err, 0);
    }
    if (rc == AIMS_OK && pubnote[0] != '\0') {
        const uint64_t n = strlen(pubnote);
        rc = aims_msg_add(w->reply, "publish", AIMS_DT_BYTES, &n, 1, pubnote, 0);
    }
    if (rc != AIMS_OK) {
        return aimsi_work_fail(w, rc, "status: no room for the reply: %s", aims_errmsg());
    }
    if (ti->durable != NULL) {
        aimsi_jobs_status_extra(ti->durable, id, id_len, w->reply); /* owner, token, resumed-from */
    }
    return AIMS_OK;
}

static aims_status do_result(train_impl *ti, aimsi_work *w)
{
    static const char *const names[] = {"queued", "running", "done", "failed", "cancelled"};
    const char *id = NULL;
    size_t id_len = 0;
    AIMSI_TRY(job_id(w, &id, &id_len));
    aims_msg_clear(w->reply);
    pthread_mutex_lock(&ti->mu);
    const train_job *j = job_find(ti, id, id_len);
    aims_status rc = AIMS_OK;
    if (j == NULL) {
        rc = aimsi_work_fail(w, AIMS_E_NOTFOUND, "result: no job %.*s", (int)id_len, id);
    } else if (!job_handle_ok(j, w)) {
        rc = JOB_DENIED(w, "result", id, id_len);
    } else if (j->state != JOB_DONE) {
        rc = aimsi_work_fail(w, AIMS_E_STATE, "result: job %.*s is %s%s%s", (int)id_len, id,
                  names[j->state], j->err[0] != '\0' ? ": " : "", j->err);
    } else {
        /* copied under the lock: a finished job can be forgotten (jobs_trim) */
        const uint64_t n = j->bundle_len;
        rc = aims_msg_add(w->reply, "bundle", AIMS_DT_BYTES, &n, 1, j->bundle, 0);
        if (rc != AIMS_OK) {
            rc = aimsi_work_fail(w, rc, "result: no room for the bundle: %s", aims_errmsg());
        }
    }
    pthread_mutex_unlock(&ti->mu);
    return rc;
}

static aims_status do_cancel(train_impl *ti, aimsi_work *w)
{
    const char *id = NULL;
    size_t id_len = 0;
    AIMSI_TRY(job_id(w, &id, &id_len));
    pthread_mutex_lock(&ti->mu);
    train_job *j = job_find(ti, id, id_len);
    if (j == NULL) {
        pthread_mutex_unlock(&ti->mu);
        return aimsi_work_fail(w, AIMS_E_NOTFOUND, "cancel: no job %.*s", (int)id_len, id);
    }
    if (!job_handle_ok(j, w)) {
        pthread_mutex_unlock(&ti->mu);
        return JOB_DENIED(w, "cancel", id, id_len);
    }
    if (j->state == JOB_QUEUED) {
        aimsi_train_queue_remove(ti, j);
        j->state = JOB_CANCELLED;
        job_release_work(j);
    } else if (j->state == JOB_RUNNING) {
        j->cancel = 1;
        if (j->trainer != NULL) {
            aims_trainer_cancel(j->trainer);
        }
    }
    const int state = j->state;
    pthread_mutex_unlock(&ti->mu);
    aimsi_train_job_news(ti, id, id_len);
    return reply_state(w, state);
}

/* With a store, status/result/cancel of a job this instance does not hold (or
 * handed over) are answered from the store: 1 when w was answered. */
static int answered_by_store(train_impl *ti, aimsi_work *w)
{
    const char *id = NULL;
    size_t len = 0;
    if (ti->durable == NULL || aimsi_msg_bytes(w->req, "job", &id, &len) != AIMS_OK || len == 0 ||
        len > TRAIN_ID_MAX) {
        return 0;
    }
    pthread_mutex_lock(&ti->mu);
    const train_job *j = job_find(ti, id, len);
    const int local = j != NULL && !j->moved;
    pthread_mutex_unlock(&ti->mu);
    const aims_status rc = local ? AIMS_E_NOTFOUND : aimsi_jobs_answer(ti->durable, w, id, len);
    w->status = rc;
    return rc != AIMS_E_NOTFOUND;
}

static void train_run(void *impl, aimsi_work *const *items, size_t n)
{
    train_impl *ti = impl;
    for (size_t i = 0; i < n; i++) {
        aimsi_work *w = items[i];
        const char *m = w->method != NULL ? w->method : "(null)";
        if (w->deadline_ns != 0 && aimsi_now_ns() >= w->deadline_ns) {
            w->status = aimsi_work_fail(w, AIMS_E_TIMEOUT, "%s: the deadline passed before the call "
                                                "started", m);
        } else if (strcmp(m, "submit") == 0) {
            w->status = do_submit(ti, w, 0);
        } else if (strcmp(m, "put_data") == 0) {
            w->status = ti->durable != NULL ? aimsi_jobs_put_data(ti->durable, w)
                                         : aimsi_work_fail(w, AIMS_E_STATE, "put_data: this "
                                                           "train service has no store");
        } else if ((strcmp(m, "status") == 0 || strcmp(m, "result") == 0 ||
                    strcmp(m, "cancel") == 0) && answered_by_store(ti, w)) {
            /* w answered from the store */
        } else if (strcmp(m, "status") == 0) {
            w->status = do_status(ti, w);
        } else if (strcmp(m, "result") == 0) {
            w->status = do_result(ti, w);
        } else if (strcmp(m, "cancel") == 0) {
            w->status = do_cancel(ti, w);
        } else {
            w->status = aimsi_work_fail(w, AIMS_E_NOTFOUND, "no method %s on train service", m);
        }
    }
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void train_stop(void *impl)
{
    train_impl *ti = impl;
    pthread_mutex_lock(&ti->mu);
    if (!ti->thread_on) {
        pthread_mutex_unlock(&ti->mu);
        return;
    }
    ti->stopping = 1;
    if (ti->running != NULL) {
        ti->running->cancel = 1;
        if (ti->running->trainer != NULL) {
            aims_trainer_cancel(ti->running->trainer);
        }
    }
    while (ti->qhead != NULL) {
        train_job *j = ti->qhead;
        aimsi_train_queue_remove(ti, j);
        j->state = JOB_CANCELLED;
        job_release_work(j);
    }
    ti->thread_on = 0;
    const pthread_t th = ti->thread;
    pthread_cond_broadcast(&ti->cv);
    pthread_mutex_unlock(&ti->mu);
    aimsi_jobs_stop(ti->durable); /* hand unfinished durable jobs over (NULL: no-op) */
    pthread_join(th, NULL);
    pthread_mutex_lock(&ti->mu);
    ti->stopping = 0;
    pthread_mutex_unlock(&ti->mu);
}

static void train_destroy(void *impl)
{
    train_impl *ti = impl;
    if (ti == NULL) {
        return;
    }
    if (ti->durable != NULL) {
        aimsi_jobs_join(ti->durable); /* no adoption into ti from here on */
    }
    train_stop(ti);
    aimsi_jobs_destroy(ti->durable);
    while (ti->jobs != NULL) {
        train_job *j = ti->jobs;
        ti->jobs = j->next;
        job_free(j);
    }
    pthread_cond_destroy(&ti->cv);
    pthread_mutex_destroy(&ti->mu);
    pthread_mutex_destroy(&ti->news_mu);
    aimsi_free(ti);
}

const aimsi_svc_kind aimsi_kind_train = {
    .name = "train",
    .batching = 0,
    .never_inline = 1,
    .run = train_run,
    .stop = train_stop,
    .destroy = train_destroy,
};

aims_status aimsi_train_create(const aims_pipeline *p, void **out)
{
    if (out == NULL) {
        return AIMSI_MISUSE("NULL out");
    }
    if (p != NULL && !aims_pipeline_is_fitted(p)) {
        return aimsi_err(NULL, AIMS_E_STATE, "train: the pipeline is not fitted");
    }
    train_impl *ti = aimsi_calloc(1, sizeof *ti);
    if (ti == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "train: no memory for the service");
    }
    if (pthread_mutex_init(&ti->mu, NULL) != 0) {
        aimsi_free(ti);
        return aimsi_err(NULL, AIMS_E_BACKEND, "train: pthread_mutex_init failed");
    }
    if (pthread_cond_init(&ti->cv, NULL) != 0 || pthread_mutex_init(&ti->news_mu, NULL) != 0) {
        pthread_mutex_destroy(&ti->mu);
        aimsi_free(ti);
        return aimsi_err(NULL, AIMS_E_BACKEND, "train: pthread_cond_init failed");
    }
    ti->p = p;
    *out = ti;
    return AIMS_OK;
}

/* The jobs module adopts a stored job: rebuilt from its stored submit. */
static aims_status train_adopt(void *user, const aims_msg *submit, uint64_t token)
{
    aims_msg *reply = NULL;
    AIMSI_TRY(aims_msg_create(&reply));
    aimsi_work w = {.method = "submit", .req = submit, .reply = reply};
    aims_status rc = do_submit(user, &w, token);
    if (rc != AIMS_OK) {
        rc = aimsi_err(NULL, rc, "%s", aims_msg_error(reply));
    }
    aims_msg_destroy(reply);
    return rc;
}

/* Room to queue an adopted job? (no claim without it) */
static int train_room(void *user)
{
    train_impl *ti = user;
    pthread_mutex_lock(&ti->mu);
    const int room = !ti->stopping && ti->queued < TRAIN_QUEUE_MAX;
    pthread_mutex_unlock(&ti->mu);
    return room;
}

aims_status aimsi_train_set_store(void *impl, const char *url, const char *instance)
{
    train_impl *ti = impl;
    aimsi_jobs *J = NULL;
    AIMSI_TRY(aimsi_jobs_create(url, instance, &J));
    pthread_mutex_lock(&ti->mu);
    const int late = ti->durable != NULL || ti->n_jobs > 0;
    ti->durable = late ? ti->durable : J;
    pthread_mutex_unlock(&ti->mu);
    if (late) {
        aimsi_jobs_destroy(J);
        return aimsi_err(NULL, AIMS_E_STATE, "train: set the store once, before any submit");
    }
    aimsi_jobs_set_room(J, train_room);
    return aimsi_jobs_start(J, train_adopt, ti);
}

aimsi_jobs *aimsi_train_jobs(void *impl)
{
    return ((train_impl *)impl)->durable;
}

aims_status aims_service_add_train(aims_node *n, const char *name, const aims_pipeline *p,
                                   aims_service **out)
{
    if (n == NULL || name == NULL || out == NULL) {
        return AIMSI_MISUSE("NULL node, name or out");
    }
    void *impl = NULL;
    AIMSI_TRY(aimsi_train_create(p, &impl));
    ((train_impl *)impl)->node = n;
    snprintf(((train_impl *)impl)->name, sizeof ((train_impl *)impl)->name, "%s", name);
    return aimsi_service_add(n, name, &aimsi_kind_train, impl, out);
}
