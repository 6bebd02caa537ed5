/*
 * test_api_transport.c -- black-box: a host transport through the public
 * aims_transport vtable, end to end.
 *
 * aims_transport is the one public extension struct, so this test is written
 * as a host would write a transport: against <aims/aims.h> only. "mem://" is
 * an in-memory transport: a listener is a name in a process-wide table; a dial
 * makes two connected endpoints; a send moves the (library-allocated) frame
 * onto the peer's instance queue, whose own thread delivers it. One delivery
 * thread per instance gives the vtable's guarantees for free: a connection's
 * hooks never run concurrently, on_accept runs before that connection's first
 * frame, and on_close is the last hook. close() may come from inside a hook or
 * from any other thread (then it waits for a running hook of that connection).
 *
 * A node listens on mem://, a client dials it; calls go by address and by
 * service name through a registry, synchronous and asynchronous, and the
 * transport counts the frames it carried so the test knows nothing went
 * around it. One global mutex keeps the transport small: it is a test.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <aims/aims.h>

#include "testalloc.h"

/* ---- the mem:// transport --------------------------------------------------- */

enum { EV_ACCEPT = 1, EV_FRAME = 2, EV_CLOSE = 3 };

typedef struct mem_inst mem_inst;

typedef struct mem_conn {
    mem_inst *inst;        /* whose thread runs this endpoint's hooks */
    struct mem_conn *peer; /* NULL once the other side closed */
    struct mem_conn *next; /* inst->conns */
    void *user;            /* the library's per-connection pointer */
    int dead;              /* on_close delivered: no more frames */
} mem_conn;

typedef struct mem_ev {
    struct mem_ev *next;
    int kind;
    mem_conn *conn;
    void *listener;
    void *frame;
    size_t len;
    aims_status why;
} mem_ev;

typedef struct mem_listener {
    struct mem_listener *next;
    mem_inst *inst;
    char name[64];
} mem_listener;

struct mem_inst {
    aims_transport_hooks hooks;
    uint64_t max_frame;
    pthread_t thread;
    pthread_cond_t cv;      /* an event arrived, or stop */
    pthread_cond_t idle_cv; /* `running` changed */
    mem_ev *head, *tail;
    mem_conn *conns;
    mem_conn *running; /* connection whose hook runs now */
    int stop;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static mem_listener *g_listeners;
static size_t g_frames, g_accepts, g_instances;

static void push_locked(mem_inst *in, int kind, mem_conn *c, void *listener, void *frame,
                        size_t len, aims_status why)
{
    mem_ev *ev = calloc(1, sizeof *ev);
    assert_non_null(ev);
    *ev = (mem_ev){NULL, kind, c, listener, frame, len, why};
    if (in->tail != NULL) {
        in->tail->next = ev;
    } else {
        in->head = ev;
    }
    in->tail = ev;
    pthread_cond_signal(&in->cv);
}

/* Forget c: drop its queued events, tell the peer, unlink and free it. */
static void release_locked(mem_conn *c)
{
    mem_inst *in = c->inst;
    mem_ev **pp = &in->head;
    in->tail = NULL;
    while (*pp != NULL) {
        mem_ev *ev = *pp;
        if (ev->conn == c) {
            *pp = ev->next;
            aims_free(ev->frame);
            free(ev);
        } else {
            in->tail = ev;
            pp = &ev->next;
        }
    }
    if (c->peer != NULL) {
        c->peer->peer = NULL;
        push_locked(c->peer->inst, EV_CLOSE, c->peer, NULL, NULL, 0, AIMS_E_CLOSED);
    }
    for (mem_conn **q = &in->conns; *q != NULL; q = &(*q)->next) {
        if (*q == c) {
            *q = c->next;
            break;
        }
    }
    free(c);
}

static void *mem_thread(void *arg)
{
    mem_inst *in = arg;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        while (!in->stop && in->head == NULL) {
            pthread_cond_wait(&in->cv, &g_mu);
        }
        if (in->stop) {
            break;
        }
        mem_ev *ev = in->head;
        in->head = ev->next;
        if (in->head == NULL) {
            in->tail = NULL;
        }
        mem_conn *c = ev->conn;
        in->running = c;
        if (ev->kind == EV_ACCEPT) {
            pthread_mutex_unlock(&g_mu);
            void *u = in->hooks.on_accept(in->hooks.user, ev->listener, c);
            pthread_mutex_lock(&g_mu);
            if (u == NULL) {
                release_locked(c); /* refused */
            } else {
                c->user = u;
                g_accepts++;
            }
        } else if (ev->kind == EV_FRAME && !c->dead) {
            void *u = c->user;
            g_frames++;
            pthread_mutex_unlock(&g_mu);
            in->hooks.on_frame(u, ev->frame, ev->len); /* may close c */
            aims_free(ev->frame);
            pthread_mutex_lock(&g_mu);
        } else if (ev->kind == EV_CLOSE && !c->dead) {
            c->dead = 1;
            void *u = c->user;
            pthread_mutex_unlock(&g_mu);
            in->hooks.on_close(u, ev->why);
            pthread_mutex_lock(&g_mu);
        } else {
            aims_free(ev->frame);
        }
        in->running = NULL;
        pthread_cond_broadcast(&in->idle_cv);
        free(ev);
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

static aims_status mem_create(void *factory_user, const aims_transport_hooks *hooks,
                              uint64_t max_frame, void **out_inst)
{
    (void)factory_user;
    mem_inst *in = calloc(1, sizeof *in);
    if (in == NULL) {
        return AIMS_E_NOMEM;
    }
    in->hooks = *hooks;
    in->max_frame = max_frame;
    pthread_cond_init(&in->cv, NULL);
    pthread_cond_init(&in->idle_cv, NULL);
    if (pthread_create(&in->thread, NULL, mem_thread, in) != 0) {
        free(in);
        return AIMS_E_BACKEND;
    }
    pthread_mutex_lock(&g_mu);
    g_instances++;
    pthread_mutex_unlock(&g_mu);
    *out_inst = in;
    return AIMS_OK;
}

static void mem_destroy(void *inst)
{
    mem_inst *in = inst;
    pthread_mutex_lock(&g_mu);
    in->stop = 1;
    pthread_cond_signal(&in->cv);
    pthread_mutex_unlock(&g_mu);
    pthread_join(in->thread, NULL);
    pthread_mutex_lock(&g_mu);
    while (in->conns != NULL) {
        release_locked(in->conns);
    }
    while (in->head != NULL) {
        mem_ev *ev = in->head;
        in->head = ev->next;
        aims_free(ev->frame);
        free(ev);
    }
    for (mem_listener **q = &g_listeners; *q != NULL;) {
        mem_listener *l = *q;
        if (l->inst == in) {
            *q = l->next;
            free(l);
        } else {
            q = &l->next;
        }
    }
    g_instances--;
    pthread_mutex_unlock(&g_mu);
    pthread_cond_destroy(&in->cv);
    pthread_cond_destroy(&in->idle_cv);
    free(in);
}

static const char *mem_name(const char *url)
{
    return strncmp(url, "mem://", 6) == 0 && url[6] != '\0' && strlen(url + 6) < 64 ? url + 6
                                                                                    : NULL;
}

static aims_status mem_listen(void *inst, const char *url, unsigned flags, char *bound,
                              size_t bound_cap, void **out_listener)
{
    (void)flags;
    const char *name = mem_name(url);
    if (name == NULL) {
        return AIMS_E_INVAL;
    }
    if ((size_t)snprintf(bound, bound_cap, "%s", url) >= bound_cap) {
        return AIMS_E_RANGE;
    }
    pthread_mutex_lock(&g_mu);
    for (mem_listener *l = g_listeners; l != NULL; l = l->next) {
        if (strcmp(l->name, name) == 0) {
            pthread_mutex_unlock(&g_mu);
            return AIMS_E_EXISTS;
        }
    }
    mem_listener *l = calloc(1, sizeof *l);
    assert_non_null(l);
    l->inst = inst;
    strcpy(l->name, name);
    l->next = g_listeners;
    g_listeners = l;
    pthread_mutex_unlock(&g_mu);
    *out_listener = l;
    return AIMS_OK;
}

static void mem_unlisten(void *inst, void *listener)
{
    (void)inst;
    pthread_mutex_lock(&g_mu);
    for (mem_listener **q = &g_listeners; *q != NULL; q = &(*q)->next) {
        if (*q == listener) {
            *q = ((mem_listener *)listener)->next;
            free(listener);
            break;
        }
    }
    pthread_mutex_unlock(&g_mu);
}

static aims_status mem_dial(void *inst, const char *url, void *conn_user, void **out_conn)
{
    const char *name = mem_name(url);
    if (name == NULL) {
        return AIMS_E_INVAL;
    }
    pthread_mutex_lock(&g_mu);
    mem_listener *l = g_listeners;
    while (l != NULL && strcmp(l->name, name) != 0) {
        l = l->next;
    }
    if (l == NULL) {
        pthread_mutex_unlock(&g_mu);
        return AIMS_E_IO; /* nobody listens: "connection refused" */
    }
    mem_conn *c = calloc(1, sizeof *c);
    mem_conn *s = calloc(1, sizeof *s);
    assert_non_null(c);
    assert_non_null(s);
    mem_inst *in = inst;
    *c = (mem_conn){in, s, in->conns, conn_user, 0};
    in->conns = c;
    *s = (mem_conn){l->inst, c, l->inst->conns, NULL, 0};
    l->inst->conns = s;
    push_locked(l->inst, EV_ACCEPT, s, l, NULL, 0, AIMS_OK);
    pthread_mutex_unlock(&g_mu);
    *out_conn = c;
    return AIMS_OK;
}

static aims_status mem_send(void *inst, void *conn, void *frame, size_t len)
{
    (void)inst;
    mem_conn *c = conn;
    pthread_mutex_lock(&g_mu);
    if (c->peer == NULL || c->dead) {
        pthread_mutex_unlock(&g_mu);
        aims_free(frame);
        return AIMS_E_CLOSED;
    }
    if (len > c->peer->inst->max_frame) {
        pthread_mutex_unlock(&g_mu);
        aims_free(frame);
        return AIMS_E_RANGE;
    }
    push_locked(c->peer->inst, EV_FRAME, c->peer, NULL, frame, len, AIMS_OK);
    pthread_mutex_unlock(&g_mu);
    return AIMS_OK;
}

static void mem_close(void *inst, void *conn)
{
    mem_inst *in = inst;
    mem_conn *c = conn;
    pthread_mutex_lock(&g_mu);
    /* From another thread, wait until a hook of c that is running returns;
     * from inside that hook (the delivery thread), go ahead. */
    while (in->running == c && !pthread_equal(pthread_self(), in->thread)) {
        pthread_cond_wait(&in->idle_cv, &g_mu);
    }
    release_locked(c);
    pthread_mutex_unlock(&g_mu);
}

static const aims_transport k_mem = {
    sizeof(aims_transport), AIMS_TRANSPORT_VERSION, "mem", NULL, mem_create, mem_destroy,
    mem_listen, mem_unlisten, mem_dial, mem_send, mem_close,
};

/* ---- the tests ---------------------------------------------------------------- */

static aims_status adder(void *user, const char *method, const aims_msg *req, aims_msg *reply,
                         uint64_t deadline_ns)
{
    (void)user;
    (void)deadline_ns;
    if (strcmp(method, "add") != 0) {
        aims_msg_set_error(reply, "unknown method");
        return AIMS_E_NOTFOUND;
    }
    size_t i = 0;
    aims_status rc = aims_msg_find(req, "x", &i);
    if (rc != AIMS_OK) {
        return rc;
    }
    const void *data = NULL;
    size_t bytes = 0;
    rc = aims_msg_get_tensor(req, i, NULL, NULL, NULL, NULL, &data, &bytes);
    if (rc != AIMS_OK || bytes != sizeof(int64_t)) {
        return rc != AIMS_OK ? rc : AIMS_E_INVAL;
    }
    int64_t x;
    memcpy(&x, data, sizeof x);
    x += 1000;
    return aims_msg_add(reply, "y", AIMS_DT_I64, NULL, 0, &x, 0);
}

typedef struct rig {
    aims_node *node;
    aims_client *client;
    aims_registry *reg;
} rig;

static void rig_up(rig *r)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(aims_registry_create(&r->reg), AIMS_OK);
    assert_int_equal(aims_node_create("memnode", &r->node), AIMS_OK);
    assert_int_equal(aims_node_add_transport(r->node, &k_mem), AIMS_OK);
    assert_int_equal(aims_node_listen(r->node, "mem://house"), AIMS_OK);
    assert_int_equal(aims_node_set_registry(r->node, r->reg), AIMS_OK);
    aims_service *s = NULL;
    assert_int_equal(aims_service_add_handler(r->node, "calc", adder, NULL, &s), AIMS_OK);
    assert_int_equal(aims_service_start(s), AIMS_OK);
    assert_int_equal(aims_client_create(&r->client), AIMS_OK);
    assert_int_equal(aims_client_add_transport(r->client, &k_mem), AIMS_OK);
    assert_int_equal(aims_client_set_registry(r->client, r->reg), AIMS_OK);
}

static void rig_down(rig *r)
{
    aims_client_destroy(r->client);
    aims_node_destroy(r->node);
    aims_registry_destroy(r->reg);
    pthread_mutex_lock(&g_mu);
    assert_int_equal(g_instances, 0); /* every instance destroyed */
    assert_null(g_listeners);
    pthread_mutex_unlock(&g_mu);
}

static int64_t add_call(aims_client *c, const char *addr, int64_t x)
{
    aims_msg *req = NULL;
    aims_msg *reply = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    assert_int_equal(aims_msg_add(req, "x", AIMS_DT_I64, NULL, 0, &x, 0), AIMS_OK);
    const aims_status rc = addr != NULL
                               ? aims_client_call_addr(c, addr, "calc", "add", req, reply, 10000)
                               : aims_client_call(c, "calc", "add", req, reply, 0, 10000);
    assert_int_equal(rc, AIMS_OK);
    size_t i = 0;
    assert_int_equal(aims_msg_find(reply, "y", &i), AIMS_OK);
    const void *data = NULL;
    assert_int_equal(aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, NULL), AIMS_OK);
    int64_t y;
    memcpy(&y, data, sizeof y);
    aims_msg_destroy(reply);
    aims_msg_destroy(req);
    return y;
}

static void test_transport_host_vtable_carries_calls_by_address_and_by_name(void **state)
{
    (void)state;
    rig r;
    rig_up(&r);
    char addr[64];
    size_t len = 0;
    assert_int_equal(aims_node_get_address(r.node, 0, addr, sizeof addr, &len), AIMS_OK);
    assert_string_equal(addr, "mem://house");

    pthread_mutex_lock(&g_mu);
    const size_t frames0 = g_frames;
    pthread_mutex_unlock(&g_mu);
    for (int64_t k = 0; k < 20; k++) {
        assert_int_equal(add_call(r.client, "mem://house", k), k + 1000);
        assert_int_equal(add_call(r.client, NULL, -k), 1000 - k); /* resolved by name */
    }
    pthread_mutex_lock(&g_mu);
    assert_true(g_frames >= frames0 + 80); /* a request and a reply per call, all via mem:// */
    assert_true(g_accepts >= 1);
    pthread_mutex_unlock(&g_mu);

    /* A failing handler's status and text come back through the transport. */
    aims_msg *req = NULL;
    aims_msg *reply = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    assert_int_equal(aims_client_call(r.client, "calc", "nope", req, reply, 0, 10000),
                     AIMS_E_NOTFOUND);
    assert_non_null(strstr(aims_client_errmsg(r.client), "unknown method"));
    aims_msg_destroy(reply);
    aims_msg_destroy(req);

    /* Nobody listens on mem://elsewhere: the dial error reaches the caller. */
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    assert_int_not_equal(aims_client_call_addr(r.client, "mem://elsewhere", "calc", "add", req,
                                               reply, 2000),
                         AIMS_OK);
    aims_msg_destroy(reply);
    aims_msg_destroy(req);
    rig_down(&r);
}

typedef struct async_box {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok;
    int64_t sum;
} async_box;

static void on_done(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    (void)error;
    async_box *b = user;
    int64_t y = 0;
    size_t i = 0;
    if (status == AIMS_OK && aims_msg_find(reply, "y", &i) == AIMS_OK) {
        const void *data = NULL;
        if (aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, NULL) == AIMS_OK) {
            memcpy(&y, data, sizeof y);
        }
    }
    pthread_mutex_lock(&b->mu);
    b->done++;
    b->ok += status == AIMS_OK;
    b->sum += y;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void test_transport_host_vtable_async_calls_and_teardown(void **state)
{
    (void)state;
    rig r;
    rig_up(&r);
    async_box b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0};
    enum { N = 64 };
    int64_t want = 0;
    for (int64_t k = 0; k < N; k++) {
        aims_msg *req = NULL;
        assert_int_equal(aims_msg_create(&req), AIMS_OK);
        assert_int_equal(aims_msg_add(req, "x", AIMS_DT_I64, NULL, 0, &k, 0), AIMS_OK);
        assert_int_equal(aims_client_call_async(r.client, "calc", "add", req, 0, 10000, on_done,
                                                &b),
                         AIMS_OK);
        aims_msg_destroy(req); /* copied by the client when the call is still pending */
        want += k + 1000;
    }
    pthread_mutex_lock(&b.mu);
    while (b.done < N) {
        pthread_cond_wait(&b.cv, &b.mu);
    }
    pthread_mutex_unlock(&b.mu);
    assert_int_equal(b.ok, N);
    assert_int_equal(b.sum, want);
    /* Tear down with the connection open: the node's side sees on_close and
     * the library closes both ends; rig_down checks nothing is left. */
    rig_down(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_transport_host_vtable_carries_calls_by_address_and_by_name, ta_setup,
            ta_teardown),
        cmocka_unit_test_setup_teardown(test_transport_host_vtable_async_calls_and_teardown,
                                        ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
