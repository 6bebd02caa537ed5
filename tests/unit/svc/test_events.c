/*
 * test_events.c -- client event watches (aims_client_watch, aims_events.h,
 * client_events.c) against a real hosted registry, on one transport
 * (argv[1]: inproc or tcp; meson registers both).
 *
 * The registry is hosted by a node (aims_node_host_registry) and changed
 * in-process; the watch sees the changes only through the "changes" method
 * over the transport, as a remote host would. Checked: join / weight / leave /
 * lease expiry / new model version arrive in order with increasing revisions;
 * a watch resumed by a NEW client from the last (epoch, revision) delivers
 * every later event exactly once (no gap, no duplicate); a compacted history
 * and a restarted registry give RESYNC + snapshot; a callback that blocks does
 * not block the client's calls, and may destroy its own watch.
 * Waits are generous upper bounds polled every 5 ms, never timing assertions.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "aims/aims.h"
#include "svc/aimsi_msg.h"
#include "svc_echo.h"
#include "testalloc.h"

#define WAIT_MS 20000
#define MAX_REC 64

static const char *g_tr = "inproc";
static int g_seq;

/* A node hosting a registry on the transport under test (svc_echo.h). */
static void host_start(svc_host *h)
{
    char listen[64];
    if (strcmp(g_tr, "tcp") == 0) {
        snprintf(listen, sizeof(listen), "tcp://127.0.0.1:0");
    } else {
        snprintf(listen, sizeof(listen), "inproc://events-%d-%d", (int)getpid(), ++g_seq);
    }
    svc_host_start(h, listen);
}

/* Events recorded by the callback (services other than aims.registry). */
typedef struct rec {
    aims_event_kind kind;
    uint64_t epoch, revision;
    aims_instance id;
    char service[64];
    uint32_t weight;
} rec;

typedef struct sink {
    pthread_mutex_t mu;
    rec r[MAX_REC];
    int n;
    /* slow-callback test */
    int block;            /* block in the first callback until released */
    int entered, released;
    aims_event_watch *self;
} sink;

static void sink_init(sink *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
}

/* Append ev to s, unless it is the hosting node's own service. */
static void sink_add(sink *s, const aims_event *ev)
{
    if (strcmp(ev->service, "aims.registry") == 0) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    if (s->n < MAX_REC) {
        rec *r = &s->r[s->n++];
        r->kind = ev->kind;
        r->epoch = ev->epoch;
        r->revision = ev->revision;
        r->id = ev->id;
        snprintf(r->service, sizeof(r->service), "%s", ev->service);
        r->weight = ev->weight;
    }
    pthread_mutex_unlock(&s->mu);
}

static void on_event(void *user, const aims_event *ev)
{
    sink *s = user;
    if (s->block && !__atomic_load_n(&s->entered, __ATOMIC_SEQ_CST)) {
        aims_event_watch *self;
        while ((self = __atomic_load_n(&s->self, __ATOMIC_SEQ_CST)) == NULL) {
            nap_ms(1); /* the test stores the handle once aims_client_watch returned */
        }
        __atomic_store_n(&s->entered, 1, __ATOMIC_SEQ_CST);
        if (s->block == 2) {
            aims_event_watch_destroy(self); /* stops the watch; freed after we return */
            /* Record this event BEFORE saying so: the test counts the sink as
             * soon as it sees `released`, and a record landing after that
             * count read as an event delivered after the destroy. */
            sink_add(s, ev);
            __atomic_store_n(&s->released, 1, __ATOMIC_SEQ_CST);
            return;
        }
        while (!__atomic_load_n(&s->released, __ATOMIC_SEQ_CST)) {
            nap_ms(2);
        }
    }
    sink_add(s, ev);
}

static int sink_count(sink *s)
{
    pthread_mutex_lock(&s->mu);
    const int n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void wait_count(sink *s, int n)
{
    for (int i = 0; i < WAIT_MS / 5 && sink_count(s) < n; i++) {
        nap_ms(5);
    }
    assert_true(sink_count(s) >= n);
}

static void wait_kind(sink *s, aims_event_kind kind, const char *service)
{
    for (int i = 0; i < WAIT_MS / 5; i++) {
        pthread_mutex_lock(&s->mu);
        for (int k = 0; k < s->n; k++) {
            if (s->r[k].kind == kind && (service == NULL || strcmp(s->r[k].service, service) == 0)) {
                pthread_mutex_unlock(&s->mu);
                return;
            }
        }
        pthread_mutex_unlock(&s->mu);
        nap_ms(5);
    }
    fail_msg("event kind %d (%s) never arrived", kind, service ? service : "*");
}

static aims_client *fast_client(void)
{
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    assert_int_equal(aims_client_set_param_i64(c, AIMS_CLIENT_SYNC_MS, 10), AIMS_OK);
    return c;
}

static void expect(const rec *r, aims_event_kind kind, const char *service)
{
    if (r->kind != kind || strcmp(r->service, service) != 0) {
        fail_msg("got kind %d '%s' (rev %llu), want kind %d '%s'", r->kind, r->service,
                 (unsigned long long)r->revision, kind, service);
    }
}

/* A watch of url's changes after (epoch, revision) (0, 0: from the start)
 * into s, which is sink_init'd here. */
static aims_event_watch *watch_into(aims_client *c, const char *url, uint64_t epoch,
                                    uint64_t revision, sink *s)
{
    sink_init(s);
    aims_event_watch *w = NULL;
    assert_int_equal(aims_client_watch(c, url, epoch, revision, on_event, s, &w), AIMS_OK);
    return w;
}

/* join, second join, weight, leave, lease expiry, new version -- in order. */
static void test_order(void **state)
{
    (void)state;
    svc_host h;
    host_start(&h);
    aims_client *c = fast_client();
    sink s;
    aims_event_watch *w = watch_into(c, h.url, 0, 0, &s);
    wait_count(&s, 1); /* RESYNC of a fresh watch */
    expect(&s.r[0], AIMS_EVENT_RESYNC, "");

    aims_instance a, b, t, v2;
    assert_int_equal(aims_registry_register(h.r, "echo@1", "inproc://a", 1, 60000, &a), AIMS_OK);
    assert_int_equal(aims_registry_register(h.r, "echo@1", "inproc://b", 1, 60000, &b), AIMS_OK);
    assert_int_equal(aims_registry_set_weight(h.r, a, 7), AIMS_OK);
    assert_int_equal(aims_registry_deregister(h.r, b), AIMS_OK);
    assert_int_equal(aims_registry_register(h.r, "tmp", "inproc://t", 1, 1, &t), AIMS_OK);
    nap_ms(5); /* tmp's 1 ms lease is over; the next "changes" sweeps it */
    assert_int_equal(aims_registry_register(h.r, "echo@2", "inproc://c", 3, 60000, &v2), AIMS_OK);
    wait_count(&s, 10);
    nap_ms(50); /* nothing more may arrive */
    assert_int_equal(sink_count(&s), 10);
    aims_event_watch_destroy(w);

    expect(&s.r[1], AIMS_EVENT_PUT, "echo@1");
    expect(&s.r[2], AIMS_EVENT_VERSION, "echo@1");
    expect(&s.r[3], AIMS_EVENT_PUT, "echo@1");
    expect(&s.r[4], AIMS_EVENT_WEIGHT, "echo@1");
    assert_int_equal(s.r[4].id, a);
    assert_int_equal(s.r[4].weight, 7);
    expect(&s.r[5], AIMS_EVENT_DELETE, "echo@1");
    assert_int_equal(s.r[5].id, b);
    expect(&s.r[6], AIMS_EVENT_PUT, "tmp");
    /* The sweep runs when "changes" is served: EXPIRE may come before or after
     * echo@2's PUT, but after tmp's PUT. */
    int expire_at = s.r[7].kind == AIMS_EVENT_EXPIRE ? 7 : 9;
    expect(&s.r[expire_at], AIMS_EVENT_EXPIRE, "tmp");
    const int put2 = expire_at == 7 ? 8 : 7;
    expect(&s.r[put2], AIMS_EVENT_PUT, "echo@2");
    expect(&s.r[put2 + 1], AIMS_EVENT_VERSION, "echo@2");
    assert_int_equal(s.r[put2].weight, 3);
    assert_int_equal(s.r[2].revision, s.r[1].revision); /* VERSION shares its PUT's revision */
    for (int k = 2; k < 10; k++) {
        assert_true(s.r[k].revision >= s.r[k - 1].revision);
        if (s.r[k].kind != AIMS_EVENT_VERSION) {
            assert_true(s.r[k].revision > s.r[k - 1].revision);
        }
        assert_int_equal(s.r[k].epoch, s.r[0].epoch);
    }
    assert_int_equal(s.r[9].revision, aims_registry_revision(h.r));
    aims_client_destroy(c);
    svc_host_stop(&h);
}

/* Client destroyed and recreated: resume from the last (epoch, revision). */
static void test_resume(void **state)
{
    (void)state;
    svc_host h;
    host_start(&h);
    aims_client *c = fast_client();
    sink s1;
    aims_event_watch *w = watch_into(c, h.url, 0, 0, &s1);
    aims_instance x, y, z;
    assert_int_equal(aims_registry_register(h.r, "svc", "inproc://x", 1, 60000, &x), AIMS_OK);
    wait_kind(&s1, AIMS_EVENT_PUT, "svc");
    aims_event_watch_destroy(w);
    aims_client_destroy(c);
    const rec last = s1.r[s1.n - 1];

    /* Changes while nobody watches. */
    assert_int_equal(aims_registry_register(h.r, "svc", "inproc://y", 1, 60000, &y), AIMS_OK);
    assert_int_equal(aims_registry_deregister(h.r, x), AIMS_OK);
    assert_int_equal(aims_registry_register(h.r, "svc@9", "inproc://z", 1, 60000, &z), AIMS_OK);

    c = fast_client();
    sink s2;
    w = watch_into(c, h.url, last.epoch, last.revision, &s2);
    wait_count(&s2, 4);
    assert_int_equal(aims_registry_set_weight(h.r, y, 5), AIMS_OK);
    wait_count(&s2, 5);
    nap_ms(50);
    aims_event_watch_destroy(w);
    assert_int_equal(s2.n, 5);
    expect(&s2.r[0], AIMS_EVENT_PUT, "svc");
    assert_int_equal(s2.r[0].id, y);
    assert_int_equal(s2.r[0].revision, last.revision + 1); /* no gap, no duplicate */
    expect(&s2.r[1], AIMS_EVENT_DELETE, "svc");
    expect(&s2.r[2], AIMS_EVENT_PUT, "svc@9");
    expect(&s2.r[3], AIMS_EVENT_VERSION, "svc@9");
    /* y was joined before this watch started: its re-put still reads as a join
     * (the resumed watch has no table yet), never as a gap. */
    assert_true(s2.r[4].kind == AIMS_EVENT_PUT || s2.r[4].kind == AIMS_EVENT_WEIGHT);
    assert_int_equal(s2.r[4].revision, aims_registry_revision(h.r));
    for (int k = 0; k < s2.n; k++) {
        assert_int_equal(s2.r[k].epoch, last.epoch);
    }
    aims_client_destroy(c);
    svc_host_stop(&h);
}

/* Resume from a revision the registry compacted away: RESYNC + snapshot. */
static void test_compacted(void **state)
{
    (void)state;
    svc_host h;
    host_start(&h);
    aims_client *c = fast_client();
    aims_instance x;
    assert_int_equal(aims_registry_register(h.r, "svc", "inproc://x", 1, 60000, &x), AIMS_OK);
    sink s1;
    aims_event_watch *w = watch_into(c, h.url, 0, 0, &s1);
    wait_kind(&s1, AIMS_EVENT_PUT, "svc");
    aims_event_watch_destroy(w);
    const rec last = s1.r[s1.n - 1];
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(aims_registry_set_weight(h.r, x, 1 + (uint32_t)(i % 9)), AIMS_OK);
    }
    sink s2;
    w = watch_into(c, h.url, last.epoch, last.revision, &s2);
    wait_count(&s2, 2);
    aims_event_watch_destroy(w);
    expect(&s2.r[0], AIMS_EVENT_RESYNC, "");
    expect(&s2.r[1], AIMS_EVENT_PUT, "svc");
    assert_int_equal(s2.r[1].weight, aims_registry_weight(h.r, x));
    assert_true(s2.r[0].revision >= last.revision + 5000);
    aims_client_destroy(c);
    svc_host_stop(&h);
}

/* The registry process restarts (new epoch, revisions from 0 again). */
static void test_registry_restart(void **state)
{
    (void)state;
    svc_host h;
    host_start(&h);
    char listen[300];
    snprintf(listen, sizeof(listen), "%s", h.url);
    aims_client *c = fast_client();
    aims_instance x;
    assert_int_equal(aims_registry_register(h.r, "old", "inproc://x", 1, 60000, &x), AIMS_OK);
    sink s;
    aims_event_watch *w = watch_into(c, h.url, 0, 0, &s);
    wait_kind(&s, AIMS_EVENT_PUT, "old");
    const uint64_t epoch1 = s.r[0].epoch;
    svc_host_stop(&h);
    nap_ms(30); /* a few failed polls */
    svc_host_start(&h, listen);
    assert_int_equal(aims_registry_register(h.r, "new", "inproc://y", 1, 60000, &x), AIMS_OK);
    wait_kind(&s, AIMS_EVENT_PUT, "new");
    aims_event_watch_destroy(w);
    int resync = -1;
    for (int k = 1; k < s.n; k++) {
        if (s.r[k].kind == AIMS_EVENT_RESYNC) {
            resync = k;
        }
    }
    assert_true(resync > 0);
    assert_true(s.r[resync].epoch != epoch1);
    for (int k = resync + 1; k < s.n; k++) {
        assert_string_equal(s.r[k].service, "new"); /* "old" is gone with its registry */
    }
    aims_client_destroy(c);
    svc_host_stop(&h);
}

/* A watch from the start into s (sink_init'd here) whose first callback
 * blocks as `block` says (on_event); waits (bounded) until *flag is set. */
static aims_event_watch *watch_blocking(aims_client *c, const char *url, sink *s, int block,
                                        int *flag)
{
    sink_init(s);
    s->block = block; /* before the watch starts: its first callback reads it */
    aims_event_watch *w = NULL;
    assert_int_equal(aims_client_watch(c, url, 0, 0, on_event, s, &w), AIMS_OK);
    __atomic_store_n(&s->self, w, __ATOMIC_SEQ_CST);
    for (int i = 0; i < WAIT_MS / 5 && !__atomic_load_n(flag, __ATOMIC_SEQ_CST); i++) {
        nap_ms(5);
    }
    assert_true(__atomic_load_n(flag, __ATOMIC_SEQ_CST));
    return w;
}

/* A callback that blocks does not block the client's own calls. */
static void test_slow_callback(void **state)
{
    (void)state;
    svc_host h;
    host_start(&h);
    aims_client *c = fast_client();
    sink s;
    aims_event_watch *w = watch_blocking(c, h.url, &s, 1, &s.entered);
    /* The callback is stuck; calls on the client go through. */
    for (int i = 0; i < 3; i++) {
        aims_msg *req = NULL, *reply = NULL;
        assert_int_equal(aims_msg_create(&req), AIMS_OK);
        assert_int_equal(aims_msg_create(&reply), AIMS_OK);
        assert_int_equal(aimsi_msg_put_i64(req, "since", 0), AIMS_OK);
        assert_int_equal(aims_client_call_addr(c, h.url, "aims.registry", "changes", req, reply,
                                               WAIT_MS),
                         AIMS_OK);
        aims_msg_destroy(req);
        aims_msg_destroy(reply);
    }
    aims_instance x;
    assert_int_equal(aims_registry_register(h.r, "late", "inproc://x", 1, 60000, &x), AIMS_OK);
    __atomic_store_n(&s.released, 1, __ATOMIC_SEQ_CST);
    wait_kind(&s, AIMS_EVENT_PUT, "late");
    aims_event_watch_destroy(w);
    aims_client_destroy(c);
    svc_host_stop(&h);
}

/* A callback destroys its own watch: nothing follows, the watch frees itself. */
static void test_destroy_in_callback(void **state)
{
    (void)state;
    svc_host h;
    host_start(&h);
    aims_client *c = fast_client();
    sink s;
    (void)watch_blocking(c, h.url, &s, 2, &s.released);
    const int n = sink_count(&s); /* the RESYNC, or nothing if it was aims.registry */
    aims_instance x;
    assert_int_equal(aims_registry_register(h.r, "after", "inproc://x", 1, 60000, &x), AIMS_OK);
    nap_ms(60);
    assert_int_equal(sink_count(&s), n);
    assert_true(n <= 1);
    aims_client_destroy(c);
    svc_host_stop(&h);
    /* The watch's thread frees it on its own: wait for the blocks to come back. */
    for (int i = 0; i < WAIT_MS / 5 && aims_alloc_live() != 0; i++) {
        nap_ms(5);
    }
}

static void test_misuse(void **state)
{
    (void)state;
    aims_client *c = fast_client();
    aims_event_watch *w = NULL;
    sink s;
    sink_init(&s);
    assert_int_equal(aims_client_watch(NULL, "inproc://x", 0, 0, on_event, &s, &w),
                     AIMS_E_MISUSE);
    assert_int_equal(aims_client_watch(c, "inproc://x", 0, 0, NULL, &s, &w), AIMS_E_MISUSE);
    assert_int_equal(aims_client_watch(c, NULL, 0, 0, on_event, &s, &w), AIMS_E_INVAL);
    assert_int_equal(aims_client_watch(c, "", 0, 0, on_event, &s, &w), AIMS_E_INVAL);
    assert_null(w);
    aims_event_watch_destroy(NULL);
    /* An unreachable registry is not an error: the watch keeps polling. */
    assert_int_equal(aims_client_watch(c, "inproc://nobody-here", 0, 0, on_event, &s, &w),
                     AIMS_OK);
    for (int i = 0; i < WAIT_MS / 5 && aims_event_watch_errmsg(w)[0] == '\0'; i++) {
        nap_ms(5);
    }
    assert_true(strlen(aims_event_watch_errmsg(w)) > 0); /* says why */
    assert_string_equal(aims_event_watch_errmsg(NULL), "");
    aims_event_watch_destroy(w);
    assert_int_equal(s.n, 0);
    aims_client_destroy(c);
}

int main(int argc, char **argv)
{
    if (svc_transport_arg(argc, argv, &g_tr, "inproc|tcp") != 0) {
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_order, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_resume, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_compacted, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_restart, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_slow_callback, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_in_callback, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_misuse, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests_name(g_tr, tests, NULL, NULL);
}
