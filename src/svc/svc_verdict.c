/*
 * svc_verdict.c -- when a canary is judged, and how one verdict holds for
 * every instance of the service (docs/LIFECYCLE.md "Verdicts"; the rule
 * itself is svc_canary.c, the version table svc_life.c).
 *
 * Verdict points. A canary used to be judged only after a batch of its own
 * traffic, so one whose window ended without traffic -- or a client asking
 * its state -- saw "running" forever. Three points judge it now, with the
 * same rule: after each batch slice (svc_life.c), on a "versions" query
 * (svc_life_ctl.c, what aims_client_canary_state reads) and on the node's
 * heartbeat tick (node.c, every AIMS_NODE_HEARTBEAT_MS while the node has a
 * registry). The rule ends every canary: too few calls extend the window
 * once, then roll back with "insufficient traffic" (svc_canary.c).
 *
 * One verdict per cluster. Every instance judges its own traffic, so two
 * instances could decide differently (one promotes, one rolls back). The
 * first verdict reached anywhere is recorded in the registry exactly once,
 * the way a model version is published (aims_publish.h, docs/PUBLISH.md:
 * first writer wins on the in-process registry, the registry service and
 * etcd):
 *   name    "<service>/<canary version>"   (the service name before any '@')
 *   version "verdict-<canary id>"          ("verdict" when the deploy had no id)
 *   owner   "<promoted|rolled_back> <node name>"
 *   meta    the reason
 * so etcd holds it under <prefix>pub/<service>/<version>/verdict-<id>. An
 * instance whose write wins applies its verdict and posts the one
 * AIMS_EVENT_MODEL of it; one whose write loses reads the winner's outcome
 * from the refusal ("... already published by <owner>", the same words on
 * every backend: no backend needed a read call) and applies that instead,
 * audited and counted like its own, logged with the winner, but without a
 * second event. Its own numbers only mattered while nothing was recorded.
 * The canary id (aims_client_canary_start sends one id to every instance)
 * keeps a later canary of the same version label from inheriting an old
 * verdict. No registry (AIMS_E_STATE): the instance decides alone, as
 * before. A registry that cannot be reached or refuses the write: the
 * instance applies its own verdict and logs that it was not recorded -- a
 * canary must end even when the registry is down.
 *
 * Threads. One verdict per table is in flight at a time (lf->deciding); the
 * record is written outside lf->mu and the outcome applied under it only if
 * the same canary is still running (lf->cgen): a rollback request in between
 * wins. With a remote registry (registry service, etcd) only the heartbeat
 * thread records: a batch may run inline on a transport's I/O thread, and a
 * registry round trip there could wait on that very thread.
 */
#include <stdio.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_dispatch.h"
#include "aimsi_life.h"
#include "aimsi_life_table.h"
#include "aimsi_node.h"
#include "aims/aims_publish.h"

int aimsi_canary_id_ok(const char *id)
{
    const size_t n = strnlen(id, AIMSI_CANARY_ID_MAX + 1u);
    if (n == 0 || n > AIMSI_CANARY_ID_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
            return 0;
        }
    }
    return 1;
}

static const char *const k_outcome[] = {"", "promoted", "rolled_back"};

/* The node records through a remote registry that its heartbeat thread serves. */
static int remote_ticked(aims_node *n)
{
    pthread_mutex_lock(&n->lock);
    const int r = n->rops != NULL && n->hb_started;
    pthread_mutex_unlock(&n->lock);
    return r;
}

/* Record verdict d of canary `ver` (id `id`) of service `svc`: the verdict to
 * apply (ours, or the one recorded first); *follow = 1 when it is another
 * instance's. note: what happened to the record ("" when there is no registry). */
static int record(aims_node *n, const char *svc, const char *ver, const char *id, int d,
                  const char *why, char *note, size_t cap, int *follow)
{
    char name[AIMSI_FRAME_MAX_SERVICE + LIFE_VER_MAX + 2];
    char key[AIMSI_CANARY_ID_MAX + 16];
    char owner[AIMS_PUBLISH_MAX_OWNER + 1];
    const char *at = strchr(svc, '@');
    const int base = at != NULL ? (int)(at - svc) : (int)strlen(svc);
    snprintf(name, sizeof name, "%.*s/%s", base, svc, ver);
    if (id[0] != '\0') {
        snprintf(key, sizeof key, "verdict-%s", id);
    } else {
        snprintf(key, sizeof key, "verdict");
    }
    snprintf(owner, sizeof owner, "%s %.100s", k_outcome[d], aimsi_node_name(n));
    *follow = 0;
    const aims_status rc = aims_node_publish_version(n, name, key, owner, why);
    char msg[AIMSI_ERRMSG_CAP];
    snprintf(msg, sizeof msg, "%s", rc == AIMS_OK ? "" : aims_errmsg());
    if (rc == AIMS_OK) {
        snprintf(note, cap, "recorded as %s@%s", name, key);
        return d;
    }
    if (rc == AIMS_E_STATE) {
        note[0] = '\0'; /* no registry: this instance decides alone */
        return d;
    }
    if (rc == AIMS_E_EXISTS) {
        static const char by[] = " already published by ";
        const char *p = strstr(msg, by);
        p = p != NULL ? p + sizeof by - 1 : "";
        for (int k = AIMSI_CANARY_PROMOTE; k <= AIMSI_CANARY_ROLLBACK; k++) {
            const size_t l = strlen(k_outcome[k]);
            if (strncmp(p, k_outcome[k], l) == 0 && p[l] == ' ') {
                /* our own earlier write (a lost reply) is ours, not another's */
                *follow = strcmp(p, owner) != 0;
                snprintf(note, cap, "%s %s@%s: %s", *follow ? "following" : "recorded as",
                         name, key, p);
                return k;
            }
        }
    }
    snprintf(note, cap, "not recorded cluster-wide (%s: %.180s)", aims_status_name(rc), msg);
    aimsi_log(AIMS_LOG_WARN, "canary %s@%s: verdict %s %s", svc, ver, k_outcome[d], note);
    return d;
}

void aimsi_life_judge(aimsi_life *lf, int tick)
{
    char why[200];
    char ver[LIFE_VER_MAX + 1];
    char id[AIMSI_CANARY_ID_MAX + 1];
    pthread_mutex_lock(&lf->mu);
    if (lf->canary < 0 || lf->deciding || lf->slot[lf->canary] == NULL) {
        pthread_mutex_unlock(&lf->mu);
        return;
    }
    const life_slot *c = lf->slot[lf->canary];
    const int d = aimsi_canary_judge(&lf->rule, &lf->slot[lf->stable]->win, &c->win,
                                     aimsi_now_ns() - lf->cstart_ns, why, sizeof why);
    if (d == AIMSI_CANARY_WAIT) {
        pthread_mutex_unlock(&lf->mu);
        return;
    }
    lf->deciding = 1;
    const uint64_t gen = lf->cgen;
    memcpy(ver, c->ver, sizeof ver);
    memcpy(id, lf->rule.id, sizeof id);
    pthread_mutex_unlock(&lf->mu);

    aims_node *n = lf->svc->node;
    int v = AIMSI_CANARY_WAIT;
    int follow = 0;
    char note[400] = "";
    if (tick || !remote_ticked(n)) {
        v = record(n, lf->svc->name, ver, id, d, why, note, sizeof note, &follow);
    }
    life_news nw;
    memset(&nw, 0, sizeof nw);
    life_slot *drop = NULL;
    pthread_mutex_lock(&lf->mu);
    lf->deciding = 0;
    if (v != AIMSI_CANARY_WAIT && lf->canary >= 0 && lf->cgen == gen &&
        lf->slot[lf->canary] != NULL) {
        const int ci = lf->canary;
        const aims_audit_action a =
            v == AIMSI_CANARY_PROMOTE ? AIMS_AUDIT_MODEL_PROMOTE : AIMS_AUDIT_MODEL_ROLLBACK;
        if (v == AIMSI_CANARY_PROMOTE) {
            lf->canary = -1;
            lf->cstate = AIMS_CANARY_STATE_PROMOTED;
            lf->prev = lf->stable;
            lf->stable = ci;
            aimsi_life_only_locked(lf, ci);
        } else {
            drop = aimsi_life_canary_back_locked(lf);
        }
        if (follow) {
            aimsi_life_news_set(&nw, lf, a, ver, "%s (judged here: %s)", note, why);
        } else {
            aimsi_life_news_set(&nw, lf, a, ver, "%s%s%s", why, note[0] != '\0' ? "; " : "",
                                note);
        }
        nw.outcome = k_outcome[v];
        nw.quiet = follow;
    }
    pthread_mutex_unlock(&lf->mu);
    aimsi_life_slot_free(drop);
    aimsi_life_news_emit(lf, &nw, "canary", 1);
}

void aimsi_life_tick(aims_service *s)
{
    if (s == NULL || atomic_load(&s->state) != AIMSI_SVC_RUNNING) {
        return;
    }
    _Atomic(aimsi_life *) *lp = aimsi_infer_life_slot(s, NULL);
    aimsi_life *lf = lp != NULL ? atomic_load_explicit(lp, memory_order_acquire) : NULL;
    if (lf != NULL) {
        aimsi_life_judge(lf, 1);
    }
}
