/*
 * test_registry.c -- white-box tests of src/orch/registry.c: leases on a fake
 * clock, revisions, lookup, watches (replay, resume, compaction, unwatch,
 * re-entrancy, ordering under concurrent writers) and allocation failures.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orch/aimsi_orch.h"
#include "testalloc.h"

#define MS 1000000ull

static uint64_t fake_clock(void *user)
{
    return atomic_load((_Atomic uint64_t *)user);
}

typedef struct rec_ev {
    uint64_t rev;
    aims_event_kind kind;
    aims_instance id;
    char service[160];
    char address[300];
} rec_ev;

typedef struct recorder {
    rec_ev *ev;
    size_t n, cap;
} recorder;

static void record(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                   const char *service, const char *address)
{
    recorder *const rc = user;
    if (rc->n == rc->cap) {
        rc->cap = rc->cap ? rc->cap * 2 : 64;
        rc->ev = realloc(rc->ev, rc->cap * sizeof(rec_ev));
        assert_non_null(rc->ev);
    }
    rec_ev *const e = &rc->ev[rc->n++];
    e->rev = rev;
    e->kind = kind;
    e->id = id;
    snprintf(e->service, sizeof(e->service), "%s", service);
    snprintf(e->address, sizeof(e->address), "%s", address);
}

static aims_registry *mk(_Atomic uint64_t *clk)
{
    aims_registry *r = NULL;
    assert_int_equal(aims_registry_create(&r), AIMS_OK);
    if (clk != NULL) {
        assert_int_equal(aims_registry_set_clock(r, fake_clock, clk), AIMS_OK);
    }
    return r;
}

static size_t live(aims_registry *r, const char *svc)
{
    size_t n = 99;
    assert_int_equal(aims_registry_lookup(r, svc, NULL, 0, &n) == AIMS_E_RANGE || n == 0, 1);
    return n;
}

static void test_registry_create_misuse(void **state)
{
    (void)state;
    assert_int_equal(aims_registry_create(NULL), AIMS_E_MISUSE);
    aims_registry_destroy(NULL);
    aims_instance id = 0;
    assert_int_equal(aims_registry_register(NULL, "a", "x", 1, 1, &id), AIMS_E_MISUSE);
    assert_int_equal(aims_registry_revision(NULL), 0);
    aims_registry *r = mk(NULL);
    assert_int_equal(aims_registry_revision(r), 0);
    assert_int_equal(aims_registry_register(r, "a", "x", 1, 1, NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_registry_watch(r, NULL, 0, NULL, NULL, &id), AIMS_E_MISUSE);
    aims_registry_destroy(r);
}

static void test_registry_register_validates(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    aims_instance id = 77;
    char long_name[200];
    memset(long_name, 'a', sizeof(long_name));
    long_name[129] = '\0';
    char long_addr[300];
    memset(long_addr, 'b', sizeof(long_addr));
    long_addr[257] = '\0';
    const char *bad[] = {"", "a b", "a@b@c", "@a", "a@", "na\xc3\xa9", long_name};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(aims_registry_register(r, bad[i], "x", 1, 10, &id), AIMS_E_INVAL);
    }
    assert_int_equal(aims_registry_register(r, "a", "", 1, 10, &id), AIMS_E_INVAL);
    assert_int_equal(aims_registry_register(r, "a", long_addr, 1, 10, &id), AIMS_E_INVAL);
    assert_int_equal(aims_registry_register(r, "a", "x", 0, 10, &id), AIMS_E_INVAL);
    assert_int_equal(aims_registry_register(r, "a", "x", 10001, 10, &id), AIMS_E_INVAL);
    assert_int_equal(aims_registry_register(r, "a", "x", 1, 0, &id), AIMS_E_INVAL);
    assert_int_equal(aims_registry_register(r, "a", "x", 1, 86400001, &id), AIMS_E_INVAL);
    assert_int_equal(id, 77);
    assert_int_equal(aims_registry_revision(r), 0);
    long_name[128] = '\0';
    long_addr[256] = '\0';
    assert_int_equal(aims_registry_register(r, long_name, long_addr, 10000, 86400000, &id),
                     AIMS_OK);
    assert_int_equal(aims_registry_register(r, "A-z_0.9/x@v1.2", "x", 1, 1, &id), AIMS_OK);
    assert_int_equal(id, 2);
    aims_registry_destroy(r);
}

static void test_registry_lease_expires_exactly_at_ttl(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 1000 * MS;
    aims_registry *r = mk(&clk);
    aims_instance id = 0;
    assert_int_equal(aims_registry_register(r, "infer", "inproc://a", 1, 100, &id), AIMS_OK);
    assert_int_equal(aims_registry_revision(r), 1);
    atomic_store(&clk, 1100 * MS - 1);
    assert_int_equal(live(r, "infer"), 1);
    assert_int_equal(aims_registry_weight(r, id), 1);
    assert_int_equal(aims_registry_revision(r), 1);
    atomic_store(&clk, 1100 * MS);
    assert_int_equal(live(r, "infer"), 0);
    assert_int_equal(aims_registry_revision(r), 2);
    assert_int_equal(aims_registry_weight(r, id), 0);
    assert_int_equal(aims_registry_heartbeat(r, id), AIMS_E_NOTFOUND);
    aims_registry_destroy(r);
}

static void test_registry_heartbeat_renews(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    aims_registry *r = mk(&clk);
    aims_instance id = 0;
    assert_int_equal(aims_registry_register(r, "infer", "a", 1, 100, &id), AIMS_OK);
    atomic_store(&clk, 90 * MS);
    assert_int_equal(aims_registry_heartbeat(r, id), AIMS_OK);
    assert_int_equal(aims_registry_revision(r), 1); /* a heartbeat is no event */
    atomic_store(&clk, 189 * MS);
    size_t n = 0;
    assert_int_equal(aims_registry_sweep(r, &n), AIMS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(live(r, "infer"), 1);
    atomic_store(&clk, 190 * MS);
    /* heartbeat after the lease ran out: the owner must register again */
    assert_int_equal(aims_registry_heartbeat(r, id), AIMS_E_NOTFOUND);
    assert_int_equal(aims_registry_revision(r), 2);
    assert_int_equal(aims_registry_sweep(r, &n), AIMS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(aims_registry_heartbeat(r, 12345), AIMS_E_NOTFOUND);
    aims_registry_destroy(r);
}

static void test_registry_sweep_counts(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    aims_registry *r = mk(&clk);
    aims_instance id = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(aims_registry_register(r, "s", "a", 1, (uint64_t)(10 + i), &id),
                         AIMS_OK);
    }
    atomic_store(&clk, 12 * MS);
    size_t n = 0;
    assert_int_equal(aims_registry_sweep(r, &n), AIMS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(aims_registry_sweep(r, NULL), AIMS_OK);
    assert_int_equal(live(r, "s"), 2);
    assert_int_equal(aims_registry_revision(r), 8);
    aims_registry_destroy(r);
}

static void test_registry_revision_per_event(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    aims_instance a = 0;
    aims_instance b = 0;
    assert_int_equal(aims_registry_register(r, "s", "a", 1, 60000, &a), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "s", "b", 1, 60000, &b), AIMS_OK);
    assert_true(b > a);
    assert_int_equal(aims_registry_revision(r), 2);
    assert_int_equal(aims_registry_set_weight(r, a, 7), AIMS_OK);
    assert_int_equal(aims_registry_weight(r, a), 7);
    assert_int_equal(aims_registry_revision(r), 3);
    assert_int_equal(aims_registry_set_weight(r, a, 0), AIMS_E_INVAL);
    assert_int_equal(aims_registry_set_weight(r, 999, 2), AIMS_E_NOTFOUND);
    assert_int_equal(aims_registry_heartbeat(r, a), AIMS_OK);
    assert_int_equal(aims_registry_revision(r), 3);
    assert_int_equal(aims_registry_deregister(r, a), AIMS_OK);
    assert_int_equal(aims_registry_revision(r), 4);
    assert_int_equal(aims_registry_deregister(r, a), AIMS_E_NOTFOUND);
    assert_int_equal(aims_registry_revision(r), 4);
    /* ids are never reused */
    aims_instance c = 0;
    assert_int_equal(aims_registry_register(r, "s", "c", 1, 60000, &c), AIMS_OK);
    assert_true(c > b);
    aims_registry_destroy(r);
}

static void test_registry_lookup_versions_and_order(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    aims_instance id[5];
    assert_int_equal(aims_registry_register(r, "infer@2", "a", 1, 60000, &id[0]), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "infer", "b", 1, 60000, &id[1]), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "infer@1", "c", 1, 60000, &id[2]), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "inferx", "d", 1, 60000, &id[3]), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "infer@2", "e", 1, 60000, &id[4]), AIMS_OK);
    aims_instance out[8] = {0};
    size_t n = 0;
    assert_int_equal(aims_registry_lookup(r, "infer", out, 8, &n), AIMS_OK);
    assert_int_equal(n, 4);
    assert_int_equal(out[0], id[0]);
    assert_int_equal(out[1], id[1]);
    assert_int_equal(out[2], id[2]);
    assert_int_equal(out[3], id[4]);
    assert_int_equal(aims_registry_lookup(r, "infer@2", out, 8, &n), AIMS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], id[0]);
    assert_int_equal(out[1], id[4]);
    assert_int_equal(aims_registry_lookup(r, "nope", out, 8, &n), AIMS_OK);
    assert_int_equal(n, 0);
    aims_instance small[2] = {42, 43};
    assert_int_equal(aims_registry_lookup(r, "infer", small, 2, &n), AIMS_E_RANGE);
    assert_int_equal(n, 4);
    assert_int_equal(small[0], 42);
    assert_int_equal(small[1], 43);
    assert_int_equal(aims_registry_lookup(r, "bad name", out, 8, &n), AIMS_E_INVAL);
    assert_int_equal(aims_registry_lookup(r, "infer", NULL, 8, &n), AIMS_E_MISUSE);
    aims_registry_destroy(r);
}

static void test_registry_address_copy(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    char addr[] = "tcp://127.0.0.1:5555";
    aims_instance id = 0;
    assert_int_equal(aims_registry_register(r, "s", addr, 1, 60000, &id), AIMS_OK);
    addr[0] = 'X'; /* the registry keeps its own copy */
    char buf[64];
    size_t len = 0;
    assert_int_equal(aims_registry_get_address(r, id, buf, sizeof(buf), &len), AIMS_OK);
    assert_string_equal(buf, "tcp://127.0.0.1:5555");
    assert_int_equal(len, 20);
    char tiny[20] = "untouched";
    len = 0;
    assert_int_equal(aims_registry_get_address(r, id, tiny, sizeof(tiny), &len), AIMS_E_RANGE);
    assert_int_equal(len, 20);
    assert_string_equal(tiny, "untouched");
    assert_int_equal(aims_registry_get_address(r, id + 1, buf, sizeof(buf), &len), AIMS_E_NOTFOUND);
    aims_registry_destroy(r);
}

static void test_registry_watch_events_and_filter(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    aims_registry *r = mk(&clk);
    recorder all = {0};
    recorder infer = {0};
    uint64_t w1 = 0;
    uint64_t w2 = 0;
    assert_int_equal(aims_registry_watch(r, NULL, 0, record, &all, &w1), AIMS_OK);
    assert_int_equal(aims_registry_watch(r, "infer", 0, record, &infer, &w2), AIMS_OK);
    assert_true(w1 != w2);
    aims_instance a = 0;
    aims_instance b = 0;
    assert_int_equal(aims_registry_register(r, "infer@3", "ia", 5, 100, &a), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "train", "tb", 1, 1000, &b), AIMS_OK);
    assert_int_equal(aims_registry_set_weight(r, a, 9), AIMS_OK);
    assert_int_equal(aims_registry_deregister(r, b), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "infer", "ic", 1, 1000, &b), AIMS_OK);
    atomic_store(&clk, 100 * MS);
    assert_int_equal(aims_registry_sweep(r, NULL), AIMS_OK);
    assert_int_equal(all.n, 6);
    const aims_event_kind kinds[] = {AIMS_EVENT_PUT, AIMS_EVENT_PUT, AIMS_EVENT_PUT,
                                     AIMS_EVENT_DELETE, AIMS_EVENT_PUT, AIMS_EVENT_EXPIRE};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(all.ev[i].rev, i + 1);
        assert_int_equal(all.ev[i].kind, kinds[i]);
    }
    assert_string_equal(all.ev[3].service, "train");
    assert_string_equal(all.ev[3].address, "tb");
    assert_int_equal(infer.n, 4);
    assert_int_equal(infer.ev[0].rev, 1);
    assert_int_equal(infer.ev[1].rev, 3);
    assert_int_equal(infer.ev[2].rev, 5);
    assert_int_equal(infer.ev[3].rev, 6);
    assert_int_equal(infer.ev[3].id, a);
    assert_string_equal(infer.ev[3].service, "infer@3");
    assert_int_equal(aims_registry_unwatch(r, w1), AIMS_OK);
    assert_int_equal(aims_registry_unwatch(r, w1), AIMS_E_NOTFOUND);
    assert_int_equal(aims_registry_unwatch(r, w2), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "infer", "x", 1, 1000, &b), AIMS_OK);
    assert_int_equal(all.n, 6);
    assert_int_equal(infer.n, 4);
    free(all.ev);
    free(infer.ev);
    aims_registry_destroy(r);
}

static void test_registry_watch_resume_replays_missed(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    aims_instance id = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(aims_registry_register(r, i % 2 ? "a" : "b", "x", 1, 60000, &id),
                         AIMS_OK);
    }
    recorder rc = {0};
    uint64_t w = 0;
    assert_int_equal(aims_registry_watch(r, NULL, 4, record, &rc, &w), AIMS_OK);
    assert_int_equal(rc.n, 6); /* replayed before the call returned */
    for (size_t i = 0; i < rc.n; i++) {
        assert_int_equal(rc.ev[i].rev, 5 + i);
        assert_int_equal(rc.ev[i].id, 5 + i);
    }
    assert_int_equal(aims_registry_deregister(r, 4), AIMS_OK);
    assert_int_equal(rc.n, 7);
    assert_int_equal(rc.ev[6].rev, 11);
    assert_int_equal(rc.ev[6].kind, AIMS_EVENT_DELETE);
    /* filtered resume */
    recorder ra = {0};
    uint64_t w2 = 0;
    assert_int_equal(aims_registry_watch(r, "a", 0, record, &ra, &w2), AIMS_OK);
    assert_int_equal(ra.n, 6); /* ids 2,4,6,8,10 PUT + DELETE of 4 */
    /* watching from "now" sees nothing old; from the future sees nothing until then */
    recorder rn = {0};
    uint64_t w3 = 0;
    assert_int_equal(aims_registry_watch(r, NULL, aims_registry_revision(r), record, &rn, &w3),
                     AIMS_OK);
    assert_int_equal(rn.n, 0);
    assert_int_equal(aims_registry_unwatch(r, w3), AIMS_OK);
    assert_int_equal(aims_registry_watch(r, NULL, 12, record, &rn, &w3), AIMS_OK);
    assert_int_equal(aims_registry_register(r, "c", "x", 1, 60000, &id), AIMS_OK);
    assert_int_equal(rn.n, 0);
    assert_int_equal(aims_registry_register(r, "c", "x", 1, 60000, &id), AIMS_OK);
    assert_int_equal(rn.n, 1);
    assert_int_equal(rn.ev[0].rev, 13);
    free(rc.ev);
    free(ra.ev);
    free(rn.ev);
    aims_registry_destroy(r);
}

static void test_registry_watch_compacted_history(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    aims_instance id = 0;
    for (int i = 0; i < 2600; i++) {
        assert_int_equal(aims_registry_register(r, "s", "x", 1, 60000, &id), AIMS_OK);
        assert_int_equal(aims_registry_deregister(r, id), AIMS_OK);
    }
    const uint64_t rev = aims_registry_revision(r);
    assert_int_equal(rev, 5200);
    recorder rc = {0};
    uint64_t w = 0;
    assert_int_equal(aims_registry_watch(r, NULL, 0, record, &rc, &w), AIMS_E_RANGE);
    assert_non_null(strstr(aims_errmsg(), "compacted"));
    assert_int_equal(aims_registry_watch(r, NULL, rev - 4097, record, &rc, &w), AIMS_E_RANGE);
    assert_int_equal(rc.n, 0);
    assert_int_equal(aims_registry_watch(r, NULL, rev - 4096, record, &rc, &w), AIMS_OK);
    assert_int_equal(rc.n, 4096);
    for (size_t i = 0; i < rc.n; i++) {
        assert_int_equal(rc.ev[i].rev, rev - 4095 + i);
    }
    free(rc.ev);
    aims_registry_destroy(r);
}

/* ---- re-entrancy ------------------------------------------------------------ */

typedef struct reent {
    aims_registry *r;
    recorder rec;
    uint64_t self;
    int unwatch_at;
    int spawned;
} reent;

/* Registers one more instance from inside the callback (once), and may
 * unwatch itself. */
static void reent_cb(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                     const char *service, const char *address)
{
    reent *const x = user;
    record(&x->rec, rev, kind, id, service, address);
    if (!x->spawned) {
        x->spawned = 1;
        aims_instance nid = 0;
        assert_int_equal(aims_registry_register(x->r, "nested", "n", 1, 60000, &nid), AIMS_OK);
    }
    if (x->unwatch_at > 0 && rev == (uint64_t)x->unwatch_at) {
        assert_int_equal(aims_registry_unwatch(x->r, x->self), AIMS_OK);
    }
}

static void test_registry_callbacks_reenter_in_order(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    reent a = {.r = r};
    recorder other = {0};
    uint64_t wo = 0;
    assert_int_equal(aims_registry_watch(r, NULL, 0, reent_cb, &a, &a.self), AIMS_OK);
    assert_int_equal(aims_registry_watch(r, NULL, 0, record, &other, &wo), AIMS_OK);
    aims_instance id = 0;
    assert_int_equal(aims_registry_register(r, "top", "t", 1, 60000, &id), AIMS_OK);
    /* both watchers: rev 1 (top) then rev 2 (nested), in order */
    assert_int_equal(a.rec.n, 2);
    assert_int_equal(other.n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(a.rec.ev[i].rev, i + 1);
        assert_int_equal(other.ev[i].rev, i + 1);
    }
    assert_string_equal(other.ev[1].service, "nested");
    free(a.rec.ev);
    free(other.ev);
    aims_registry_destroy(r);
}

static void test_registry_unwatch_from_own_callback(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    aims_instance id = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(aims_registry_register(r, "s", "x", 1, 60000, &id), AIMS_OK);
    }
    reent a = {.r = r, .spawned = 1, .unwatch_at = 3};
    /* the callback needs its own id: registered via out_watch before replay */
    assert_int_equal(aims_registry_watch(r, NULL, 0, reent_cb, &a, &a.self), AIMS_OK);
    assert_int_equal(a.rec.n, 3); /* replay stopped after the unwatch */
    reent b = {.r = r, .spawned = 1, .unwatch_at = 7};
    assert_int_equal(aims_registry_watch(r, NULL, 5, reent_cb, &b, &b.self), AIMS_OK);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(aims_registry_register(r, "s", "x", 1, 60000, &id), AIMS_OK);
    }
    assert_int_equal(b.rec.n, 2);
    assert_int_equal(aims_registry_unwatch(r, b.self), AIMS_E_NOTFOUND);
    free(a.rec.ev);
    free(b.rec.ev);
    aims_registry_destroy(r);
}

typedef struct order_rec_fwd {
    uint64_t last;
    size_t n;
    int bad;
} order_rec_fwd;

static void order_fwd_cb(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                         const char *service, const char *address)
{
    (void)id;
    (void)service;
    (void)address;
    order_rec_fwd *const o = user;
    o->bad |= rev != o->last + 1 || kind != AIMS_EVENT_EXPIRE;
    o->last = rev;
    o->n++;
}

/* Writes from inside a callback queue behind it; the ring never drops an
 * undelivered event: past 4096 queued events a write fails with OVERLOADED. */
typedef struct flood {
    aims_registry *r;
    int done;
    int ok;
    aims_status last;
    uint64_t last_rev;
    size_t n;
    int bad;
} flood;

static void flood_cb(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                     const char *service, const char *address)
{
    (void)kind;
    (void)id;
    (void)service;
    (void)address;
    flood *const f = user;
    f->bad |= rev != f->last_rev + 1;
    f->last_rev = rev;
    f->n++;
    if (f->done) {
        return;
    }
    f->done = 1;
    for (int i = 0; i < 5000; i++) {
        aims_instance nid = 0;
        f->last = aims_registry_register(f->r, "f", "x", 1, 60000, &nid);
        if (f->last != AIMS_OK) {
            break;
        }
        f->ok++;
    }
}

static void test_registry_nested_flood_overloads_without_loss(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    flood f = {.r = r};
    uint64_t w = 0;
    assert_int_equal(aims_registry_watch(r, NULL, 0, flood_cb, &f, &w), AIMS_OK);
    aims_instance id = 0;
    assert_int_equal(aims_registry_register(r, "top", "t", 1, 60000, &id), AIMS_OK);
    assert_int_equal(f.last, AIMS_E_OVERLOADED);
    assert_int_equal(f.ok, 4096);
    assert_int_equal(f.bad, 0);
    assert_int_equal(f.n, 4097);
    assert_int_equal(aims_registry_revision(r), 4097);
    size_t n = 0;
    assert_int_equal(aims_registry_lookup(r, "f", NULL, 0, &n), AIMS_E_RANGE);
    assert_int_equal(n, 4096);
    aims_registry_destroy(r);
}

/* Many leases running out at once: more than the ring can hold undelivered in
 * one round; sweep() loops, every EXPIRE is delivered once, in order. */
static void test_registry_mass_expiry(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    aims_registry *r = mk(&clk);
    aims_instance id = 0;
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(aims_registry_register(r, "m", "x", 1, 10, &id), AIMS_OK);
    }
    order_rec_fwd o = {.last = aims_registry_revision(r)};
    uint64_t w = 0;
    assert_int_equal(aims_registry_watch(r, NULL, o.last, order_fwd_cb, &o, &w), AIMS_OK);
    atomic_store(&clk, 10 * MS);
    size_t n = 0;
    assert_int_equal(aims_registry_sweep(r, &n), AIMS_OK);
    assert_int_equal(n, 5000);
    assert_int_equal(o.n, 5000);
    assert_int_equal(o.bad, 0);
    assert_int_equal(aims_registry_revision(r), 10000);
    aims_registry_destroy(r);
}

/* ---- random operations against a reference model -------------------------------- */

#define MODEL_MAX 4000

typedef struct model_inst {
    aims_instance id;
    int svc;
    uint32_t weight;
    uint64_t ttl, deadline;
    int alive;
} model_inst;

typedef struct model {
    model_inst in[MODEL_MAX];
    size_t n;
    uint64_t rev;
    int in_view[MODEL_MAX + 1]; /* by id: maintained from watch events */
} model;

static const char *const k_svc[] = {"a@1", "a@2", "b"};

static void model_view_cb(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                          const char *service, const char *address)
{
    (void)rev;
    (void)service;
    (void)address;
    model *const m = user;
    assert_true(id <= MODEL_MAX);
    m->in_view[id] = kind == AIMS_EVENT_PUT;
}

static void model_expire(model *m, uint64_t now)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->in[i].alive && m->in[i].deadline <= now) {
            m->in[i].alive = 0;
            m->rev++;
        }
    }
}

static model_inst *model_find(model *m, aims_instance id)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->in[i].id == id && m->in[i].alive) {
            return &m->in[i];
        }
    }
    return NULL;
}

static void model_check(aims_registry *r, model *m)
{
    assert_int_equal(aims_registry_revision(r), m->rev);
    const char *const queries[] = {"a", "a@1", "a@2", "b"};
    for (size_t q = 0; q < 4; q++) {
        aims_instance got[MODEL_MAX];
        size_t n = 0;
        assert_int_equal(aims_registry_lookup(r, queries[q], got, MODEL_MAX, &n), AIMS_OK);
        size_t k = 0;
        for (size_t i = 0; i < m->n; i++) {
            const model_inst *const x = &m->in[i];
            const int hit = q == 0 ? x->svc < 2 : x->svc == (int)q - 1;
            if (x->alive && hit) {
                assert_true(k < n);
                assert_int_equal(got[k], x->id);
                k++;
            }
        }
        assert_int_equal(k, n);
    }
    for (size_t i = 0; i < m->n; i++) {
        assert_int_equal(m->in_view[m->in[i].id], m->in[i].alive);
    }
}

static void test_registry_random_ops_match_model(void **state)
{
    (void)state;
    _Atomic uint64_t clk = 0;
    aims_registry *r = mk(&clk);
    model *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    uint64_t w = 0;
    assert_int_equal(aims_registry_watch(r, NULL, 0, model_view_cb, m, &w), AIMS_OK);
    aimsi_rng rng;
    aimsi_rng_seed(&rng, 20261127);
    for (int step = 0; step < 3000 && m->n < MODEL_MAX; step++) {
        const uint64_t op = aimsi_rng_below(&rng, 6);
        const uint64_t now = atomic_load(&clk);
        const aims_instance pick = m->n > 0 ? m->in[aimsi_rng_below(&rng, m->n)].id : 1;
        if (op == 0 || op == 1) {
            model_inst *const x = &m->in[m->n];
            x->svc = (int)aimsi_rng_below(&rng, 3);
            x->ttl = 1 + aimsi_rng_below(&rng, 40);
            x->weight = (uint32_t)(1 + aimsi_rng_below(&rng, 100));
            assert_int_equal(aims_registry_register(r, k_svc[x->svc], "addr", x->weight, x->ttl,
                                                    &x->id), AIMS_OK);
            model_expire(m, now);
            x->deadline = now + x->ttl * MS;
            x->alive = 1;
            m->n++;
            m->rev++;
        } else if (op == 2) {
            model_expire(m, now);
            model_inst *const x = model_find(m, pick);
            assert_int_equal(aims_registry_heartbeat(r, pick), x ? AIMS_OK : AIMS_E_NOTFOUND);
            if (x != NULL) {
                x->deadline = now + x->ttl * MS;
            }
        } else if (op == 3) {
            model_expire(m, now);
            model_inst *const x = model_find(m, pick);
            assert_int_equal(aims_registry_deregister(r, pick), x ? AIMS_OK : AIMS_E_NOTFOUND);
            if (x != NULL) {
                x->alive = 0;
                m->rev++;
            }
        } else if (op == 4) {
            model_expire(m, now);
            model_inst *const x = model_find(m, pick);
            assert_int_equal(aims_registry_set_weight(r, pick, 7), x ? AIMS_OK : AIMS_E_NOTFOUND);
            if (x != NULL) {
                x->weight = 7;
                m->rev++;
            }
            assert_int_equal(aims_registry_weight(r, pick), x ? 7 : 0);
        } else {
            atomic_store(&clk, now + aimsi_rng_below(&rng, 6) * MS);
            model_expire(m, atomic_load(&clk));
            assert_int_equal(aims_registry_sweep(r, NULL), AIMS_OK);
        }
        model_check(r, m);
    }
    assert_true(m->rev > 2000); /* the walk really exercised the registry */
    free(m);
    aims_registry_destroy(r);
}

/* ---- concurrency ----------------------------------------------------------------- */

#define WRITERS 4
#define PER_WRITER 500

typedef struct order_rec {
    uint64_t last;
    size_t n;
    int bad;
    uint64_t seen_mask_hits;
} order_rec;

static void order_cb(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                     const char *service, const char *address)
{
    (void)kind;
    (void)id;
    (void)service;
    (void)address;
    order_rec *const o = user;
    if (rev != o->last + 1) {
        o->bad = 1;
    }
    o->last = rev;
    o->n++;
}

typedef struct filt_rec {
    uint64_t last;
    size_t n;
    int bad;
} filt_rec;

static void filt_cb(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                    const char *service, const char *address)
{
    (void)kind;
    (void)id;
    (void)address;
    filt_rec *const f = user;
    if (rev <= f->last || strcmp(service, "w0") != 0) {
        f->bad = 1;
    }
    f->last = rev;
    f->n++;
}

typedef struct writer_ctx {
    aims_registry *r;
    int idx;
} writer_ctx;

static void *writer(void *arg)
{
    writer_ctx *const w = arg;
    char svc[8];
    snprintf(svc, sizeof(svc), "w%d", w->idx);
    for (int i = 0; i < PER_WRITER; i++) {
        aims_instance id = 0;
        if (aims_registry_register(w->r, svc, "addr", 1, 60000, &id) != AIMS_OK) {
            return (void *)1;
        }
        if (i % 3 == 0 && aims_registry_deregister(w->r, id) != AIMS_OK) {
            return (void *)1;
        }
    }
    return NULL;
}

static void test_registry_watch_order_concurrent_writers(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    order_rec all = {0};
    filt_rec w0 = {0};
    uint64_t wa = 0;
    uint64_t wf = 0;
    assert_int_equal(aims_registry_watch(r, NULL, 0, order_cb, &all, &wa), AIMS_OK);
    assert_int_equal(aims_registry_watch(r, "w0", 0, filt_cb, &w0, &wf), AIMS_OK);
    pthread_t th[WRITERS];
    writer_ctx ctx[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        ctx[i].r = r;
        ctx[i].idx = i;
        assert_int_equal(pthread_create(&th[i], NULL, writer, &ctx[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
    }
    const size_t dels = (PER_WRITER + 2) / 3;
    const uint64_t total = (uint64_t)WRITERS * (PER_WRITER + dels);
    assert_int_equal(aims_registry_revision(r), total);
    assert_int_equal(all.bad, 0);
    assert_int_equal(all.n, total);
    assert_int_equal(all.last, total);
    assert_int_equal(w0.bad, 0);
    assert_int_equal(w0.n, PER_WRITER + dels);
    aims_registry_destroy(r);
}

typedef struct unwatch_ctx {
    aims_registry *r;
    atomic_int stop;
    atomic_long calls;
} unwatch_ctx;

static void count_cb(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                     const char *service, const char *address)
{
    (void)rev;
    (void)kind;
    (void)id;
    (void)service;
    (void)address;
    unwatch_ctx *const u = user;
    atomic_fetch_add(&u->calls, 1);
}

static void *churn(void *arg)
{
    unwatch_ctx *const u = arg;
    while (!atomic_load(&u->stop)) {
        aims_instance id = 0;
        if (aims_registry_register(u->r, "s", "x", 1, 60000, &id) != AIMS_OK ||
            aims_registry_deregister(u->r, id) != AIMS_OK) {
            return (void *)1;
        }
    }
    return NULL;
}

static void test_registry_unwatch_stops_callbacks(void **state)
{
    (void)state;
    aims_registry *r = mk(NULL);
    unwatch_ctx u = {.r = r};
    atomic_init(&u.stop, 0);
    atomic_init(&u.calls, 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, churn, &u), 0);
    }
    for (int round = 0; round < 50; round++) {
        uint64_t w = 0;
        aims_status st;
        do { /* the churn may outrun the 4096-event history between the two calls */
            st = aims_registry_watch(r, NULL, aims_registry_revision(r), count_cb, &u, &w);
        } while (st == AIMS_E_RANGE);
        assert_int_equal(st, AIMS_OK);
        assert_int_equal(aims_registry_unwatch(r, w), AIMS_OK);
        const long after = atomic_load(&u.calls);
        for (int spin = 0; spin < 50; spin++) {
            aims_instance id = 0;
            assert_int_equal(aims_registry_register(r, "t", "y", 1, 60000, &id), AIMS_OK);
            assert_int_equal(aims_registry_deregister(r, id), AIMS_OK);
        }
        assert_int_equal(atomic_load(&u.calls), after);
    }
    atomic_store(&u.stop, 1);
    for (int i = 0; i < 2; i++) {
        void *ret = NULL;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
    }
    aims_registry_destroy(r);
}

/* ---- allocation failures -------------------------------------------------------- */

static void noop_cb(void *user, uint64_t rev, aims_event_kind kind, aims_instance id,
                    const char *service, const char *address)
{
    (void)user;
    (void)rev;
    (void)kind;
    (void)id;
    (void)service;
    (void)address;
}

static aims_status op_full(void *ctx)
{
    (void)ctx;
    aims_registry *r = NULL;
    AIMSI_TRY(aims_registry_create(&r));
    aims_status st = AIMS_OK;
    uint64_t w = 0;
    for (int i = 0; i < 40 && st == AIMS_OK; i++) {
        aims_instance id = 0;
        st = aims_registry_register(r, i % 2 ? "a@1" : "b", "tcp://h:1", 1, 60000, &id);
        if (st == AIMS_OK && i == 5) {
            st = aims_registry_watch(r, "a", 0, noop_cb, NULL, &w);
        }
    }
    for (int i = 0; i < 6 && st == AIMS_OK; i++) {
        uint64_t w2 = 0;
        st = aims_registry_watch(r, NULL, (uint64_t)i, noop_cb, NULL, &w2);
    }
    if (st == AIMS_OK) {
        st = aims_registry_unwatch(r, w);
    }
    aims_registry_destroy(r);
    return st;
}

static void test_registry_alloc_failures(void **state)
{
    (void)state;
    ta_fail_loop("registry", op_full, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registry_create_misuse, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_register_validates, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_lease_expires_exactly_at_ttl, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_heartbeat_renews, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_sweep_counts, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_revision_per_event, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_lookup_versions_and_order, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_address_copy, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_watch_events_and_filter, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_watch_resume_replays_missed, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_watch_compacted_history, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_callbacks_reenter_in_order, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_unwatch_from_own_callback, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_nested_flood_overloads_without_loss,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_mass_expiry, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_random_ops_match_model, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_watch_order_concurrent_writers, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_unwatch_stops_callbacks, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_registry_alloc_failures, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
