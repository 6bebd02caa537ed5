/*
 * svc_worker.c -- the node's worker threads: they run the queued requests of
 * the node's services (service.c has the overview, svc_dispatch.c the
 * dispatch that fills the queues).
 *
 * Workers. node->lock guards every queue. A worker picks, round robin over the
 * node's services, one with queued work and a free slot; for batching kinds it
 * takes queued requests in order while their rows (qitem.rows) fit in
 * AIMS_SERVICE_BATCH_MAX -- a request with more rows than that runs alone --
 * and, when the queue runs dry,
 * waits for more up to AIMS_SERVICE_BATCH_DELAY_US (never past the earliest
 * deadline of the batch minus one expected run). While it waits it marks the
 * service batch_waiting so other workers do not split the batch.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../core/aimsi_core.h"
#include "aimsi_svckind.h"
#include "aimsi_node.h"
#include "aimsi_service.h"
#include "registry/aimsi_regbk.h"

/* ---- workers ------------------------------------------------------------------- */

/* Under node->lock: a service with queued work and a free slot (slot taken). */
static aims_service *pick_ready(aims_node *n)
{
    const size_t cnt = atomic_load_explicit(&n->n_svc, memory_order_acquire);
    for (size_t k = 0; k < cnt; k++) {
        const size_t i = (n->rr + k) % cnt;
        aims_service *s = atomic_load_explicit(&n->svc[i], memory_order_relaxed);
        if (s->head != NULL && !s->batch_waiting && aimsi_service_slot_try_acquire(s)) {
            n->rr = i + 1;
            return s;
        }
    }
    return NULL;
}

/* A batch being taken: its items and their rows. */
typedef struct take_state {
    aimsi_qitem *head, *tail;
    size_t cnt;
    int64_t rows;
    uint64_t earliest; /* earliest deadline in it (0: none) */
} take_state;

/* Under node->lock: move items from s's queue to the batch (in the order
 * svc_admit.c serves them) while their rows fit in `want` rows (the first
 * one whatever its rows); items that must not run any more go to *dropped.
 * Returns 1 when the batch is full: the next queued item does not fit. */
static int take_items(aims_service *s, take_state *b, int64_t want, aimsi_qitem **dropped)
{
    const uint64_t now = aimsi_now_ns();
    while (b->rows < want) {
        const int64_t room = b->cnt == 0 ? INT64_MAX : want - b->rows;
        aimsi_qitem *it = aimsi_admit_take(s, now, dropped, room);
        if (it == NULL) {
            return s->head != NULL;
        }
        if (b->tail != NULL) {
            b->tail->next = it;
        } else {
            b->head = it;
        }
        b->tail = it;
        if (it->w.deadline_ns != 0 && (b->earliest == 0 || it->w.deadline_ns < b->earliest)) {
            b->earliest = it->w.deadline_ns;
        }
        b->cnt++;
        b->rows += it->rows;
        atomic_fetch_add_explicit(&s->running_rows, it->rows, memory_order_relaxed);
    }
    return 1;
}

static void complete_item(aims_service *s, aimsi_qitem *it, int ran, uint64_t now)
{
    aimsi_service_note_done(s, it->w.status, now - it->t_enq);
    if (ran && it->w.status == AIMS_OK) {
        aimsi_admit_note_done(s, now - it->t_enq);
    }
    if (ran) {
        it->done(it->ctx, it->w.status, &it->reply,
                 it->w.status == AIMS_OK ? "" : aims_msg_error(&it->reply));
    } else {
        char text[320];
        if (it->w.status == AIMS_E_OVERLOADED) {
            snprintf(text, sizeof(text),
                     "service %s overloaded: dropped after waiting %" PRIu64
                     " ms (sustained overload); retry after %" PRIu64 " ms",
                     s->name, (now - it->t_enq) / 1000000u,
                     aimsi_admit_hint_ms(s, atomic_load(&s->queued_rows), 0));
        } else if (it->w.status == AIMS_E_CANCELLED) {
            snprintf(text, sizeof(text), "cancelled by the caller while queued at service %s",
                     s->name);
        } else {
            snprintf(text, sizeof(text),
                     "deadline passed or unreachable while queued at service %s", s->name);
        }
        aimsi_service_reject(s, it->w.status, it->done, it->ctx, text);
    }
    aimsi_service_free_item(it);
}

/* Run one taken batch (outside the lock), then release its slot. */
static void run_batch(aims_service *s, aimsi_qitem *list, size_t cnt)
{
    aimsi_work *stackv[VEC_STACK];
    aimsi_work **vec = stackv;
    size_t cap = VEC_STACK;
    if (cnt > VEC_STACK) {
        aimsi_work **big = aimsi_calloc(cnt, sizeof(*big));
        if (big != NULL) {
            vec = big;
            cap = cnt;
        }
    }
    const uint64_t now = aimsi_now_ns();
    aimsi_qitem *it = list;
    while (it != NULL) {
        /* Split the list into runs of at most `cap` live items (cap < cnt only
         * when the vector allocation failed). */
        aimsi_qitem *first = it;
        size_t k = 0;
        size_t taken = 0;
        uint64_t rows = 0;
        for (; it != NULL && k < cap; it = it->next, taken++) {
            if (it->w.deadline_ns != 0 && now >= it->w.deadline_ns) {
                it->w.status = AIMS_E_TIMEOUT;
                continue;
            }
            if (it->w.cancel != NULL && atomic_load(it->w.cancel)) {
                it->w.status = AIMS_E_CANCELLED; /* the caller gave up: never runs */
                continue;
            }
            vec[k++] = &it->w;
            rows += (uint64_t)it->rows;
        }
        if (k > 0) {
            const uint64_t t1 = aimsi_now_ns();
            s->kind->run(s->impl, vec, k);
            const uint64_t t2 = aimsi_now_ns();
            aimsi_service_note_run(s, t2 - t1, rows);
            aimsi_climit_note_run(&s->climit, t2, t2 - t1);
            atomic_fetch_add_explicit(&s->n_batches, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&s->n_rows, rows, memory_order_relaxed);
            (void)aims_metrics_count(s->node->mx, "aims_svc_batches_total", s->labels, 1);
            (void)aims_metrics_count(s->node->mx, "aims_svc_batch_rows_total", s->labels, rows);
        }
        const uint64_t t3 = aimsi_now_ns();
        size_t ri = 0;
        aimsi_qitem *p = first;
        for (size_t j = 0; j < taken; j++) {
            aimsi_qitem *next = p->next;
            const int ran = ri < k && vec[ri] == &p->w;
            if (ran) {
                ri++;
            }
            complete_item(s, p, ran, t3);
            p = next;
        }
    }
    if (vec != stackv) {
        aimsi_free(vec);
    }
}

static void *worker_main(void *arg)
{
    aims_node *n = arg;
    (void)pthread_setname_np(pthread_self(), "aims-worker"); /* top -H, chrt -p */
    pthread_mutex_lock(&n->lock);
    while (!n->workers_stop) {
        aims_service *s = pick_ready(n);
        if (s == NULL) {
            pthread_cond_wait(&n->work_cond, &n->lock);
            continue;
        }
        take_state b = {0};
        aimsi_qitem *dropped = NULL;
        const int64_t want = aimsi_service_per_run(s);
        int full = take_items(s, &b, want, &dropped);
        if (s->kind->batching && !full && s->p_batch_delay_us > 0) {
            /* Wait for the batch to fill, never past the earliest deadline
             * minus one expected run. */
            s->batch_waiting = 1;
            const uint64_t delay = (uint64_t)s->p_batch_delay_us * 1000u;
            const uint64_t until0 = aimsi_now_ns() + delay;
            for (;;) {
                if (full || n->workers_stop ||
                    atomic_load(&s->state) != AIMSI_SVC_RUNNING) {
                    break;
                }
                uint64_t until = until0;
                const uint64_t ewma = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
                if (b.earliest != 0) {
                    const uint64_t cut = b.earliest > ewma ? b.earliest - ewma : 0;
                    until = cut < until ? cut : until;
                }
                if (aimsi_now_ns() >= until) {
                    break;
                }
                const struct timespec ts = aimsi_service_mono_ts(until);
                (void)pthread_cond_timedwait(&n->work_cond, &n->lock, &ts);
                full = take_items(s, &b, want, &dropped);
            }
            s->batch_waiting = 0;
        }
        pthread_mutex_unlock(&n->lock);
        aimsi_service_note_depth(s);
        for (aimsi_qitem *d = dropped, *dn = NULL; d != NULL; d = dn) {
            dn = d->next;
            complete_item(s, d, 0, aimsi_now_ns());
        }
        run_batch(s, b.head, b.cnt);
        atomic_fetch_sub_explicit(&s->running_rows, b.rows, memory_order_relaxed);
        atomic_fetch_sub(&s->inflight, 1);
        aimsi_service_poke_idle(s);
        pthread_mutex_lock(&n->lock);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

aims_status aimsi_node_workers_start(aims_node *n)
{
    pthread_mutex_lock(&n->lock);
    if (n->threads != NULL) {
        pthread_mutex_unlock(&n->lock);
        return AIMS_OK;
    }
    const size_t want = n->p_workers > 0 ? (size_t)n->p_workers : (size_t)aimsi_cpu_count();
    pthread_t *th = aimsi_calloc(want, sizeof(*th));
    if (th == NULL) {
        pthread_mutex_unlock(&n->lock);
        return aimsi_err(&n->obj, AIMS_E_NOMEM, "node %s: out of memory for %zu workers",
                         n->name, want);
    }
    size_t made = 0;
    for (; made < want; made++) {
        if (pthread_create(&th[made], NULL, worker_main, n) != 0) {
            break;
        }
    }
    if (made < want) {
        n->workers_stop = 1;
        pthread_cond_broadcast(&n->work_cond);
        pthread_mutex_unlock(&n->lock);
        for (size_t i = 0; i < made; i++) {
            pthread_join(th[i], NULL);
        }
        aimsi_free(th);
        pthread_mutex_lock(&n->lock);
        n->workers_stop = 0;
        pthread_mutex_unlock(&n->lock);
        return aimsi_err(&n->obj, AIMS_E_BACKEND, "node %s: cannot start worker thread %zu",
                         n->name, made);
    }
    n->threads = th;
    n->n_threads = want;
    pthread_mutex_unlock(&n->lock);
    return AIMS_OK;
}

void aimsi_node_workers_stop(aims_node *n)
{
    pthread_mutex_lock(&n->lock);
    pthread_t *th = n->threads;
    const size_t cnt = n->n_threads;
    n->workers_stop = 1;
    pthread_cond_broadcast(&n->work_cond);
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < cnt; i++) {
        pthread_join(th[i], NULL);
    }
    aimsi_free(th);
    pthread_mutex_lock(&n->lock);
    n->threads = NULL;
    n->n_threads = 0;
    n->workers_stop = 0;
    pthread_mutex_unlock(&n->lock);
}
