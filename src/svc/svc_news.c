/*
 * svc_news.c -- model lifecycle steps and training job states as registry
 * records, so event watchers (aims_client_watch, docs/EVENTS.md) see them.
 *
 * Why registry records: the registry is the one ordered, revisioned,
 * resumable history every process already shares, on every backend (the
 * in-process registry, the registry service, etcd). A lifecycle step or a job
 * state written there gets a revision between the instance joins and leaves
 * around it, survives a watcher's reconnect (resume from a revision) and comes
 * back in a snapshot after a RESYNC -- with no second event channel to keep
 * consistent with the first.
 *
 * How: one record per subject, registered by the node that owns the subject,
 * under a reserved service name, with the state as its "address" text:
 *   aims.model/<infer service>          action=deploy version=blobs@9 by=train detail=...
 *   aims.job/<train service>/<job id>   state=running epoch=2 loss=0.31 node=n1 job=<id>
 * A new state registers a new record, then removes the one it replaces (a PUT
 * and a DELETE in the registry's history). The watcher (client_events.c)
 * turns a PUT of such a record into AIMS_EVENT_MODEL / AIMS_EVENT_JOB and
 * drops the DELETE and EXPIRE of records (bookkeeping, not news). So the live
 * set holds the latest state of every subject: a snapshot after RESYNC is "the
 * state now". Records have a lease of AIMSI_NEWS_TTL_MS (one hour) and are not
 * heartbeated: a finished job's record disappears after an hour; a record of
 * a node that died disappears with its lease on etcd / after the TTL.
 *
 * Costs: a post is one registration and one removal -- in memory for a local
 * registry, two round trips for a joined one -- made on the thread that made
 * the change (a lifecycle request, the canary decision, the job thread once
 * per epoch). Nothing is posted when the node has no registry.
 */
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_news.h"
#include "aimsi_node.h"
#include "aimsi_regsync.h"

aims_status aimsi_news_post(aims_node *n, const char *record, const char *text,
                            uint64_t *io_id)
{
    pthread_mutex_lock(&n->lock);
    aims_registry *reg = n->reg;
    const aimsi_reg_ops *rops = n->rops;
    void *rctx = n->rctx;
    pthread_mutex_unlock(&n->lock);
    const uint64_t old = *io_id;
    uint64_t id = 0;
    aims_status rc = AIMS_E_STATE;
    if (rops != NULL) {
        rc = rops->reg(rctx, record, text, 1, AIMSI_NEWS_TTL_MS, &id);
    } else if (reg != NULL) {
        aims_instance iid = 0;
        rc = aims_registry_register(reg, record, text, 1, AIMSI_NEWS_TTL_MS, &iid);
        id = (uint64_t)iid;
    }
    *io_id = rc == AIMS_OK ? id : 0;
    aimsi_news_drop(n, old);
    if (rc != AIMS_OK && rc != AIMS_E_STATE) {
        aimsi_log(AIMS_LOG_WARN, "events: cannot post %s: %s", record, aims_errmsg());
    }
    return rc;
}

void aimsi_news_drop(aims_node *n, uint64_t id)
{
    if (id == 0) {
        return;
    }
    pthread_mutex_lock(&n->lock);
    aims_registry *reg = n->reg;
    const aimsi_reg_ops *rops = n->rops;
    void *rctx = n->rctx;
    pthread_mutex_unlock(&n->lock);
    if (rops != NULL) {
        (void)rops->dereg(rctx, id);
    } else if (reg != NULL) {
        (void)aims_registry_deregister(reg, (aims_instance)id); /* may have expired */
    }
}

/* Append s to a record text, newlines (the registry service's separator) as spaces. */
static void put_text(char *buf, size_t cap, const char *s, size_t len)
{
    size_t used = strlen(buf);
    for (size_t i = 0; i < len && s[i] != '\0' && used + 1 < cap; i++) {
        buf[used++] = s[i] == '\n' || s[i] == '\r' ? ' ' : s[i];
    }
    buf[used] = '\0';
}

static const char *action_name(aims_audit_action a)
{
    switch (a) {
    case AIMS_AUDIT_MODEL_LOAD:
        return "load";
    case AIMS_AUDIT_MODEL_UNLOAD:
        return "unload";
    case AIMS_AUDIT_MODEL_WEIGHT:
        return "weight";
    case AIMS_AUDIT_MODEL_ROLLBACK:
        return "rollback";
    case AIMS_AUDIT_MODEL_DEPLOY:
        return "deploy";
    case AIMS_AUDIT_MODEL_PROMOTE:
        return "promote";
    case AIMS_AUDIT_MODEL_SWAP:
        return "swap";
    default:
        return NULL;
    }
}

uint64_t aimsi_news_model(aims_node *n, const char *svc, aims_audit_action action,
                          const char *resource, const char *who, const char *detail)
{
    const char *an = action_name(action);
    char record[AIMSI_FRAME_MAX_SERVICE + 1];
    if (an == NULL || snprintf(record, sizeof record, "%s%s", AIMSI_NEWS_MODEL, svc) >=
                          (int)sizeof record) {
        return 0;
    }
    char text[AIMSI_NEWS_TEXT_MAX + 1];
    snprintf(text, sizeof text, "action=%s version=%s by=%s detail=", an, resource, who);
    put_text(text, sizeof text, detail, strlen(detail));
    uint64_t id = 0;
    (void)aimsi_news_post(n, record, text, &id);
    return id;
}

void aimsi_news_job(aims_node *n, const char *train_svc, const char *job, size_t job_len,
                    const char *state, int32_t epoch, float loss, const char *detail,
                    uint64_t *io_id)
{
    /* registry names: [A-Za-z0-9_./-]; the text carries the exact id */
    char record[AIMSI_FRAME_MAX_SERVICE + 1];
    int k = snprintf(record, sizeof record, "%s%s/", AIMSI_NEWS_JOB, train_svc);
    if (k < 0 || (size_t)k >= sizeof record - 1) {
        return;
    }
    for (size_t i = 0; i < job_len && (size_t)k + 1 < sizeof record; i++) {
        const unsigned char c = (unsigned char)job[i];
        record[k++] = isalnum(c) || c == '_' || c == '.' || c == '-' ? (char)c : '_';
    }
    record[k] = '\0';
    char text[AIMSI_NEWS_TEXT_MAX + 1];
    if (isfinite(loss)) {
        snprintf(text, sizeof text, "state=%s epoch=%d loss=%.6g node=%s ", state, (int)epoch,
                 (double)loss, n->name);
    } else {
        snprintf(text, sizeof text, "state=%s epoch=%d loss=nan node=%s ", state, (int)epoch,
                 n->name);
    }
    if (detail != NULL && detail[0] != '\0') {
        put_text(text, sizeof text, "detail=", 7);
        put_text(text, sizeof text, detail, strlen(detail));
        put_text(text, sizeof text, " ", 1);
    }
    put_text(text, sizeof text, "job=", 4);
    put_text(text, sizeof text, job, job_len);
    (void)aimsi_news_post(n, record, text, io_id);
}

int aimsi_news_kind(const char *service, char *subj, size_t cap)
{
    const size_t lm = sizeof AIMSI_NEWS_MODEL - 1, lj = sizeof AIMSI_NEWS_JOB - 1;
    if (strncmp(service, AIMSI_NEWS_MODEL, lm) == 0) {
        snprintf(subj, cap, "%s", service + lm);
        return AIMS_EVENT_MODEL;
    }
    if (strncmp(service, AIMSI_NEWS_JOB, lj) == 0) {
        const char *s = service + lj;
        const char *slash = strrchr(s, '/');
        const size_t len = slash != NULL ? (size_t)(slash - s) : strlen(s);
        snprintf(subj, cap, "%.*s", (int)len, s);
        return AIMS_EVENT_JOB;
    }
    return 0;
}

void aimsi_news_job_step(aims_node *n, const char *train_svc, const char *job, size_t job_len,
                         int state, int32_t epoch, float loss, int adopted, const char *detail,
                         aimsi_job_news *io)
{
    static const char *const names[] = {"queued", "running", "done", "failed", "cancelled"};
    if (state < 0 || state > 4) {
        return;
    }
    if (!io->posted && state != 0) {
        aimsi_news_job(n, train_svc, job, job_len, "queued", 0, NAN, "", &io->id);
    }
    if (!io->posted || state != io->state) {
        const char *name = state == 1 && adopted ? "resumed" : names[state];
        aimsi_news_job(n, train_svc, job, job_len, name, epoch, loss, detail, &io->id);
    } else if (state == 1 && epoch != io->epoch) {
        aimsi_news_job(n, train_svc, job, job_len, "progress", epoch, loss, "", &io->id);
    } else {
        return;
    }
    io->posted = 1;
    io->state = state;
    io->epoch = epoch;
}
