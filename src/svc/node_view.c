/*
 * node_view.c -- read-only views of a node for front doors (aimsi_dispatch.h):
 * which services it has, whether each is running, draining and registered,
 * and whether the node as a whole is ready for traffic (the HTTP readiness
 * probe). Part of the node implementation, so it reads the node/service
 * layout of aimsi_node.h, but never takes node->lock for long and never waits
 * on a registry call: a service whose reg_lock is busy (a registration or
 * renewal in progress) is reported as not registered for this look.
 */
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>

#include "aimsi_dispatch.h"
#include "aimsi_node.h"

static void view_one(aims_service *s, aimsi_svc_view *v)
{
    aims_node *n = s->node;
    memset(v, 0, sizeof(*v));
    v->svc = s;
    snprintf(v->name, sizeof(v->name), "%s", s->name);
    snprintf(v->model, sizeof(v->model), "%.*s", (int)s->base_len, s->name);
    if (s->name[s->base_len] == '@') {
        snprintf(v->version, sizeof(v->version), "%s", s->name + s->base_len + 1);
    }
    v->kind = s->kind != NULL ? s->kind->name : "";
    const int state = atomic_load(&s->state);
    v->draining = state == AIMSI_SVC_CLOSING || atomic_load(&s->stopping) != 0;
    v->running = state == AIMSI_SVC_RUNNING && !v->draining && !atomic_load(&n->closing);
    pthread_mutex_lock(&n->lock);
    const int need_reg = n->reg != NULL || n->rops != NULL;
    pthread_mutex_unlock(&n->lock);
    if (!need_reg) {
        v->registered = 1;
    } else if (pthread_mutex_trylock(&s->reg_lock) == 0) {
        v->registered = s->registered && !s->reg_leaving;
        pthread_mutex_unlock(&s->reg_lock);
    }
}

size_t aimsi_node_view(aims_node *n, aimsi_svc_view *out, size_t cap)
{
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE)) {
        return 0;
    }
    const size_t cnt = atomic_load_explicit(&n->n_svc, memory_order_acquire);
    for (size_t i = 0; i < cnt && i < cap; i++) {
        view_one(atomic_load_explicit(&n->svc[i], memory_order_relaxed), &out[i]);
    }
    return cnt;
}

int aimsi_node_ready(aims_node *n, char *why, size_t why_cap)
{
    char scratch[8];
    if (why == NULL) {
        why = scratch;
        why_cap = sizeof(scratch);
    }
    if (!aimsi_obj_ok(n, AIMSI_MAGIC_NODE) || atomic_load(&n->closing)) {
        snprintf(why, why_cap, "node is closing");
        return 0;
    }
    const size_t cnt = atomic_load_explicit(&n->n_svc, memory_order_acquire);
    if (cnt == 0) {
        snprintf(why, why_cap, "node %s has no services", n->name);
        return 0;
    }
    for (size_t i = 0; i < cnt; i++) {
        aimsi_svc_view v;
        view_one(atomic_load_explicit(&n->svc[i], memory_order_relaxed), &v);
        if (v.draining) {
            snprintf(why, why_cap, "service %s is draining", v.name);
            return 0;
        }
        if (!v.running) {
            snprintf(why, why_cap, "service %s is not started", v.name);
            return 0;
        }
        if (!v.registered) {
            snprintf(why, why_cap, "service %s is not registered", v.name);
            return 0;
        }
    }
    return 1;
}

const char *aimsi_node_name(const aims_node *n)
{
    return n != NULL ? n->name : "";
}
