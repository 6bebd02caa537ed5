/*
 * aimsi_life_table.h -- private to svc_life.c and svc_life_ctl.c: the version
 * table of one infer service and the state transitions both files apply.
 * svc_life.c owns the table (slots, routing, canary decisions); svc_life_ctl.c
 * turns lifecycle requests into those transitions. Everything marked
 * "_locked" runs under lf->mu.
 */
#ifndef AIMSI_LIFE_TABLE_H
#define AIMSI_LIFE_TABLE_H

#include <pthread.h>

#include "aimsi_life.h"
#include "aimsi_node.h"

#define LIFE_MAX 8
#define LIFE_VER_MAX 32
#define LIFE_WEIGHT_MAX 10000
#define CHUNK 64
#define PATH_CAP 1024

typedef struct life_slot {
    char ver[LIFE_VER_MAX + 1];
    void *impl;          /* infer impl */
    aims_bundle *bundle; /* owned; NULL for the base (the host's) */
    int base;            /* impl is the service's own: never freed here */
    uint32_t weight;
    int64_t cur;         /* smooth weighted round robin */
    int refs;            /* runs using it */
    int gone;            /* out of the table: free when refs reach 0 */
    aimsi_canary_win win;
    uint64_t calls, errors, fallbacks;
} life_slot;

struct aimsi_life {
    pthread_mutex_t mu;
    aims_service *svc;
    void *base_impl;
    life_slot *slot[LIFE_MAX];
    int stable;          /* index of the stable version */
    int prev;            /* index rollback returns to, or -1 */
    int canary;          /* index of the running canary, or -1 */
    aims_canary_state cstate;
    aimsi_canary_rule rule;
    uint64_t cstart_ns;
    uint64_t cgen;       /* canaries started so far: a verdict applies to its own only */
    int deciding;        /* a verdict is being recorded (svc_verdict.c), outside mu */
    char dir[PATH_CAP];  /* model directory (resolved), "" = none */
    _Atomic uint64_t news_id; /* registry record of the last step (svc_news.c), 0 = none */
};

/* What to tell the world after the mutex is released. */
typedef struct life_news {
    aims_audit_action action; /* 0: nothing to audit */
    char resource[AIMSI_FRAME_MAX_SERVICE + LIFE_VER_MAX + 2];
    char detail[256];
    int weights;              /* weight gauges changed */
    const char *outcome;      /* canary decision, or NULL */
    int quiet;                /* no event: another instance reported this verdict */
} life_news;

/* Slots (svc_life.c). */
int aimsi_life_find(const aimsi_life *lf, const char *v);
void aimsi_life_slot_free(life_slot *s);
life_slot *aimsi_life_remove_locked(aimsi_life *lf, int i);
uint64_t aimsi_life_total_locked(const aimsi_life *lf);
void aimsi_life_settle_locked(aimsi_life *lf);
void aimsi_life_only_locked(aimsi_life *lf, int keep);
/* Add version `ver` ("" = next number, written back) over b (owned from here, also on failure). */
aims_status aimsi_life_add_locked(aimsi_life *lf, char *ver, size_t ver_cap, aims_bundle *b,
                                  int *out_idx, char *why, size_t cap);
life_slot *aimsi_life_canary_back_locked(aimsi_life *lf);
/* Load b as `ver` and start a canary at pct % (1..99) or switch to it (100). */
aims_status aimsi_life_deploy(aimsi_life *lf, char *ver, size_t ver_cap, aims_bundle *b,
                              int64_t pct, const aimsi_canary_rule *rule, life_news *nw,
                              char *why, size_t cap);
/* News: fill under mu, emit (weights gauges, audit, decision metric, log) after. */
void aimsi_life_news_set(life_news *nw, const aimsi_life *lf, aims_audit_action a,
                         const char *ver, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
void aimsi_life_news_emit(aimsi_life *lf, const life_news *nw, const char *who, int audit);

/* Requests (svc_life_ctl.c). */
int aimsi_life_is_ctl(const char *method);
void aimsi_life_ctl_run(aimsi_life *lf, aimsi_work *w);

#endif
