/*
 * aimsi_news.h -- model lifecycle and training job news as registry records
 * (svc_news.c; public side: the AIMS_EVENT_MODEL / AIMS_EVENT_JOB kinds of
 * aims_events.h, docs/EVENTS.md).
 *
 * Why its own header: svc_life.c (lifecycle steps), svc_train.c (job state)
 * and client_events.c (the watcher turning records back into events) meet
 * here and nowhere else.
 */
#ifndef AIMSI_NEWS_H
#define AIMSI_NEWS_H

#include <stddef.h>
#include <stdint.h>

#include "aims/aims_orch.h"
#include "aims/aims_policy.h"
#include "aims/aims_svc.h"

/* Reserved service-name prefixes of news records. */
#define AIMSI_NEWS_MODEL "aims.model/"
#define AIMSI_NEWS_JOB "aims.job/"
/* Lease of a news record: a record not replaced within this time expires. */
#define AIMSI_NEWS_TTL_MS 3600000u
/* Longest record text (a registry address). */
#define AIMSI_NEWS_TEXT_MAX 255

/* Register `text` under service `record` in the registry node n registers its
 * services with (local or joined backend) and then remove the record *io_id
 * (0 = none) replaced by it; *io_id becomes the new record (0 when posting
 * failed: the old one is removed anyway, so nobody keeps a stale state).
 * No registry: AIMS_E_STATE and nothing happens. Blocks for the registry's
 * round trips; the caller serialises posts for one *io_id. */
aims_status aimsi_news_post(aims_node *n, const char *record, const char *text,
                            uint64_t *io_id);
/* Remove record id (0: nothing) from n's registry. */
void aimsi_news_drop(aims_node *n, uint64_t id);

/* A lifecycle step of infer service `svc`: record "aims.model/<svc>", text
 * "action=<a> version=<resource> by=<who> detail=<detail>". Returns the new
 * record id (0: none); the caller drops the previous one. */
uint64_t aimsi_news_model(aims_node *n, const char *svc, aims_audit_action action,
                          const char *resource, const char *who, const char *detail);

/* A job's state: record "aims.job/<train svc>/<job id, sanitised>", text
 * "state=<s> epoch=<e> loss=<l> node=<node> [detail=<d> ]job=<exact id>". */
void aimsi_news_job(aims_node *n, const char *train_svc, const char *job, size_t job_len,
                    const char *state, int32_t epoch, float loss, const char *detail,
                    uint64_t *io_id);

/* What a job's watchers were told last (kept with the job by svc_train.c). */
typedef struct aimsi_job_news {
    uint64_t id;   /* its live record, 0 = none */
    int posted;    /* anything posted yet */
    int state;     /* last state posted (svc_train.c's JOB_*: queued 0 .. cancelled 4) */
    int32_t epoch; /* last epoch posted */
} aimsi_job_news;

/* Post what changed since *io: "queued" first when nothing was posted yet,
 * then the state ("resumed" instead of "running" for an adopted job), or
 * "progress" when only the epoch of a running job moved. `detail`: an error
 * or the publish outcome ("" = none). The caller serialises calls per job. */
void aimsi_news_job_step(aims_node *n, const char *train_svc, const char *job, size_t job_len,
                         int state, int32_t epoch, float loss, int adopted, const char *detail,
                         aimsi_job_news *io);

/* Watcher side: AIMS_EVENT_MODEL or AIMS_EVENT_JOB when `service` is a news
 * record (*subject: the infer or train service name, copied into subj), else 0. */
int aimsi_news_kind(const char *service, char *subj, size_t cap);

#endif
