/*
 * test_svc_registry.c -- the registry sync, both ends: the "aims.registry"
 * service's "changes" method (svc_registry.c) and the client mirror that
 * polls it (aimsi_regsync_*, registry/regbk_service.c).
 *
 * "changes" is the etcd pattern: the caller passes the revision it has seen
 * (since) and the registry's epoch; it gets the events after since, or a
 * snapshot of every live instance when it is new (epoch 0), when the registry
 * restarted (epoch differs), or when since fell out of the 4096-event history
 * (compaction). The tests drive the method with a plain client to check each
 * case, then run the mirror thread against a hosted registry: it follows
 * puts, weight changes and deletes revision by revision, keeps its last view
 * while the registry is gone (static stability), and converges by snapshot
 * after the registry came back with a new epoch or after a compaction.
 * Waits are generous upper bounds polled every 10 ms, never timing assertions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "aims/aims.h"
#include "codec/aimsi_kv.h"
#include "svc/aimsi_msg.h"
#include "svc/aimsi_regsync.h"
#include "svc/registry/aimsi_regbk.h"
#include "svc_echo.h"
#include "testalloc.h"

#define WAIT_MS 10000

/* One decoded "changes" reply. */
typedef struct changes {
    int64_t epoch, revision, snapshot;
    size_t n;
    int32_t kinds[16];
    char services[16][64];
} changes;

static aims_status call_changes(aims_client *c, const char *url, int64_t since, int64_t epoch,
                                changes *out)
{
    aims_msg *req = NULL, *reply = NULL;
    assert_int_equal(aims_msg_create(&req), AIMS_OK);
    assert_int_equal(aims_msg_create(&reply), AIMS_OK);
    assert_int_equal(aimsi_msg_put_i64(req, "since", since), AIMS_OK);
    assert_int_equal(aimsi_msg_put_i64(req, "epoch", epoch), AIMS_OK);
    aims_status rc =
        aims_client_call_addr(c, url, "aims.registry", "changes", req, reply, WAIT_MS);
    if (rc == AIMS_OK) {
        memset(out, 0, sizeof(*out));
        assert_int_equal(aimsi_msg_int(reply, "epoch", &out->epoch), AIMS_OK);
        assert_int_equal(aimsi_msg_int(reply, "revision", &out->revision), AIMS_OK);
        assert_int_equal(aimsi_msg_int(reply, "snapshot", &out->snapshot), AIMS_OK);
        size_t ik;
        assert_int_equal(aims_msg_find(reply, "kinds", &ik), AIMS_OK);
        const void *kinds;
        size_t bk;
        assert_int_equal(aims_msg_get_tensor(reply, ik, NULL, NULL, NULL, NULL, &kinds, &bk), AIMS_OK);
        out->n = bk / 4;
        const char *svc;
        size_t svc_len;
        assert_int_equal(aimsi_msg_bytes(reply, "services", &svc, &svc_len), AIMS_OK);
        const char *p = svc;
        for (size_t k = 0; k < out->n && k < 16; k++) {
            memcpy(&out->kinds[k], (const char *)kinds + k * 4, 4);
            assert_true(aimsi_kv_field_next(&p, svc + svc_len, out->services[k],
                                            sizeof(out->services[k])));
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    return rc;
}

/* Entries of ch naming service (the hosting node lists its own
 * "aims.registry" service too, so snapshots are checked by name). */
static size_t listed(const changes *ch, const char *service)
{
    size_t k = 0;
    for (size_t i = 0; i < ch->n && i < 16; i++) {
        k += strcmp(ch->services[i], service) == 0;
    }
    return k;
}

static size_t count_of(aims_registry *r, const char *service)
{
    size_t n = 0;
    const aims_status rc = aims_registry_lookup(r, service, NULL, 0, &n);
    assert_true(rc == AIMS_OK || rc == AIMS_E_RANGE);
    return n;
}

/* Wait until `r` holds n instances of service; returns whether it did. */
static int wait_count(aims_registry *r, const char *service, size_t n)
{
    for (int t = 0; t < WAIT_MS; t += 10) {
        if (count_of(r, service) == n) {
            return 1;
        }
        nap_ms(10);
    }
    return count_of(r, service) == n;
}

/* Weight of the only instance of service in r (0 when not exactly one). */
static uint32_t only_weight(aims_registry *r, const char *service)
{
    aims_instance id;
    size_t n = 0;
    if (aims_registry_lookup(r, service, &id, 1, &n) != AIMS_OK || n != 1) {
        return 0;
    }
    return aims_registry_weight(r, id);
}

/* ---- "changes": the registry end --------------------------------------- */

static void test_changes_new_caller_gets_snapshot_then_events(void **state)
{
    (void)state;
    svc_host h;
    svc_host_start(&h, "tcp://127.0.0.1:0");
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    aims_instance a, b;
    assert_int_equal(aims_registry_register(h.r, "alpha", "tcp://10.0.0.1:1", 1, 60000, &a),
                     AIMS_OK);

    changes ch;
    assert_int_equal(call_changes(c, h.url, 0, 0, &ch), AIMS_OK);
    assert_int_equal(ch.snapshot, 1); /* epoch 0: a new caller lists everything */
    assert_int_equal(listed(&ch, "alpha"), 1);
    const size_t base = ch.n - 1; /* the host's own entries */
    assert_int_equal((uint64_t)ch.revision, aims_registry_revision(h.r));
    assert_true(ch.epoch != 0);
    const int64_t epoch = ch.epoch, rev0 = ch.revision;

    /* Resumed from rev0 with the right epoch: only what happened since. */
    assert_int_equal(aims_registry_register(h.r, "beta", "tcp://10.0.0.2:1", 1, 60000, &b),
                     AIMS_OK);
    assert_int_equal(aims_registry_deregister(h.r, a), AIMS_OK);
    assert_int_equal(call_changes(c, h.url, rev0, epoch, &ch), AIMS_OK);
    assert_int_equal(ch.snapshot, 0);
    assert_int_equal(ch.epoch, epoch);
    assert_int_equal(ch.n, 2);
    assert_int_equal(ch.kinds[0], AIMS_EVENT_PUT);
    assert_string_equal(ch.services[0], "beta");
    assert_int_equal(ch.kinds[1], AIMS_EVENT_DELETE);
    assert_string_equal(ch.services[1], "alpha");
    assert_int_equal(ch.revision, rev0 + 2);

    /* Nothing new: an empty, non-snapshot reply at the same revision. */
    const int64_t rev1 = ch.revision;
    assert_int_equal(call_changes(c, h.url, rev1, epoch, &ch), AIMS_OK);
    assert_int_equal(ch.snapshot, 0);
    assert_int_equal(ch.n, 0);
    assert_int_equal(ch.revision, rev1);

    /* Another epoch (the caller saw a registry that restarted): a snapshot. */
    assert_int_equal(call_changes(c, h.url, rev1, epoch + 2, &ch), AIMS_OK);
    assert_int_equal(ch.snapshot, 1);
    assert_int_equal(ch.n, base + 1);
    assert_int_equal(listed(&ch, "beta"), 1);
    assert_int_equal(listed(&ch, "alpha"), 0);

    /* A caller ahead of the registry (it restarted and numbers from 1): a snapshot. */
    assert_int_equal(call_changes(c, h.url, rev1 + 1000, epoch, &ch), AIMS_OK);
    assert_int_equal(ch.snapshot, 1);
    assert_int_equal(ch.n, base + 1);

    aims_client_destroy(c);
    svc_host_stop(&h);
}

static void test_changes_compacted_history_gives_snapshot(void **state)
{
    (void)state;
    svc_host h;
    svc_host_start(&h, "inproc://regsync-compact");
    aims_client *c = NULL;
    assert_int_equal(aims_client_create(&c), AIMS_OK);
    aims_instance keep;
    assert_int_equal(aims_registry_register(h.r, "keep", "tcp://10.0.0.9:1", 3, 60000, &keep),
                     AIMS_OK);
    changes ch;
    assert_int_equal(call_changes(c, h.url, 0, 0, &ch), AIMS_OK);
    const int64_t epoch = ch.epoch, rev0 = ch.revision;

    /* 2 x 2100 events: rev0 falls out of the 4096-event history. */
    for (int i = 0; i < 2100; i++) {
        aims_instance id;
        assert_int_equal(aims_registry_register(h.r, "churn", "tcp://10.0.0.8:1", 1, 60000, &id),
                         AIMS_OK);
        assert_int_equal(aims_registry_deregister(h.r, id), AIMS_OK);
    }
    assert_int_equal(call_changes(c, h.url, rev0, epoch, &ch), AIMS_OK);
    assert_int_equal(ch.snapshot, 1); /* compacted: list again */
    assert_int_equal(listed(&ch, "keep"), 1);
    assert_int_equal(listed(&ch, "churn"), 0);
    assert_int_equal((uint64_t)ch.revision, aims_registry_revision(h.r));

    aims_client_destroy(c);
    svc_host_stop(&h);
}

/* ---- the client mirror --------------------------------------------------- */

static void test_mirror_follows_revisions(void **state)
{
    (void)state;
    svc_host h;
    svc_host_start(&h, "tcp://127.0.0.1:0");
    aims_registry *mirror = NULL;
    assert_int_equal(aims_registry_create(&mirror), AIMS_OK);
    aims_instance a;
    assert_int_equal(aims_registry_register(h.r, "alpha@1", "tcp://10.0.0.1:7", 5, 60000, &a),
                     AIMS_OK);
    aimsi_regsync *rs = NULL;
    assert_int_equal(aimsi_regsync_start(h.url, mirror, 10, NULL, &rs), AIMS_OK);
    /* The first sync runs on the caller's thread: the view is there on return. */
    assert_int_equal(count_of(mirror, "alpha"), 1);
    assert_int_equal(only_weight(mirror, "alpha@1"), 5);
    aims_instance m;
    size_t n = 0;
    assert_int_equal(aims_registry_lookup(mirror, "alpha", &m, 1, &n), AIMS_OK);
    char addr[64];
    size_t addr_len = 0;
    assert_int_equal(aims_registry_get_address(mirror, m, addr, sizeof(addr), &addr_len), AIMS_OK);
    assert_string_equal(addr, "tcp://10.0.0.1:7");

    /* A weight change is a PUT of the same instance: the mirror updates in place. */
    assert_int_equal(aims_registry_set_weight(h.r, a, 9), AIMS_OK);
    for (int t = 0; t < WAIT_MS && only_weight(mirror, "alpha") != 9; t += 10) {
        nap_ms(10);
    }
    assert_int_equal(only_weight(mirror, "alpha"), 9);
    assert_int_equal(count_of(mirror, "alpha"), 1);

    /* Several instances, then deletes, in revision order. */
    aims_instance b1, b2;
    assert_int_equal(aims_registry_register(h.r, "beta", "tcp://10.0.0.2:7", 1, 60000, &b1),
                     AIMS_OK);
    assert_int_equal(aims_registry_register(h.r, "beta", "tcp://10.0.0.3:7", 1, 60000, &b2),
                     AIMS_OK);
    assert_true(wait_count(mirror, "beta", 2));
    assert_int_equal(aims_registry_deregister(h.r, b1), AIMS_OK);
    assert_int_equal(aims_registry_deregister(h.r, a), AIMS_OK);
    assert_true(wait_count(mirror, "alpha", 0));
    assert_true(wait_count(mirror, "beta", 1));
    assert_int_equal(aimsi_regsync_count(rs, 0), 0); /* no failed sync on a healthy link */

    aimsi_regsync_stop(rs);
    aims_registry_destroy(mirror);
    svc_host_stop(&h);
}

static void test_mirror_survives_restart_and_compaction(void **state)
{
    (void)state;
    const char *url = "inproc://regsync-restart";
    svc_host h;
    svc_host_start(&h, url);
    aims_registry *mirror = NULL;
    assert_int_equal(aims_registry_create(&mirror), AIMS_OK);
    aimsi_regsync *rs = NULL;
    assert_int_equal(aimsi_regsync_start(url, mirror, 10, NULL, &rs), AIMS_OK);
    aims_instance a;
    assert_int_equal(aims_registry_register(h.r, "old", "tcp://10.0.0.1:1", 1, 60000, &a),
                     AIMS_OK);
    assert_true(wait_count(mirror, "old", 1));

    /* The registry goes away: syncs fail, the mirror keeps its last view. */
    svc_host_stop(&h);
    const uint64_t failed = aimsi_regsync_count(rs, 0);
    for (int t = 0; t < WAIT_MS && aimsi_regsync_count(rs, 0) < failed + 3; t += 10) {
        nap_ms(10);
    }
    assert_true(aimsi_regsync_count(rs, 0) >= failed + 3);
    assert_int_equal(count_of(mirror, "old"), 1);

    /* It comes back empty under a new epoch with another instance: the
     * snapshot adds the new one and drops the stale one. */
    svc_host_start(&h, url);
    aims_instance b;
    assert_int_equal(aims_registry_register(h.r, "new", "tcp://10.0.0.2:1", 1, 60000, &b),
                     AIMS_OK);
    assert_true(wait_count(mirror, "new", 1));
    assert_true(wait_count(mirror, "old", 0));

    /* Churn past the history while the mirror polls: it converges on the live set. */
    for (int i = 0; i < 2100; i++) {
        aims_instance id;
        assert_int_equal(aims_registry_register(h.r, "churn", "tcp://10.0.0.8:1", 1, 60000, &id),
                         AIMS_OK);
        assert_int_equal(aims_registry_deregister(h.r, id), AIMS_OK);
    }
    aims_instance c2;
    assert_int_equal(aims_registry_register(h.r, "last", "tcp://10.0.0.3:1", 1, 60000, &c2),
                     AIMS_OK);
    assert_true(wait_count(mirror, "last", 1));
    assert_true(wait_count(mirror, "churn", 0));
    assert_int_equal(count_of(mirror, "new"), 1);

    aimsi_regsync_stop(rs);
    aims_registry_destroy(mirror);
    svc_host_stop(&h);
}

/* ---- hostile replies ------------------------------------------------------- */

static aims_msg *reply_with(int n_kinds, int n_ids, const char *services)
{
    aims_msg *m = NULL;
    assert_int_equal(aims_msg_create(&m), AIMS_OK);
    assert_int_equal(aimsi_msg_put_i64(m, "epoch", 7), AIMS_OK);
    assert_int_equal(aimsi_msg_put_i64(m, "revision", 3), AIMS_OK);
    assert_int_equal(aimsi_msg_put_i64(m, "snapshot", 1), AIMS_OK);
    assert_int_equal(aimsi_msg_put_bytes(m, "services", services, strlen(services)), AIMS_OK);
    assert_int_equal(aimsi_msg_put_bytes(m, "addresses", "tcp://a:1\ntcp://b:1\n", 20),
                     AIMS_OK);
    const int32_t kinds[2] = {AIMS_EVENT_PUT, AIMS_EVENT_PUT}, weights[2] = {1, 1};
    const int64_t ids[2] = {1, 2};
    uint64_t dk = (uint64_t)n_kinds, di = (uint64_t)n_ids, dw = 2;
    assert_int_equal(aims_msg_add(m, "kinds", AIMS_DT_I32, &dk, 1, kinds, 0),
                     AIMS_OK);
    assert_int_equal(aims_msg_add(m, "ids", AIMS_DT_I64, &di, 1, ids, 0),
                     AIMS_OK);
    assert_int_equal(aims_msg_add(m, "weights", AIMS_DT_I32, &dw, 1, weights, 0), AIMS_OK);
    return m;
}

static void test_apply_rejects_malformed_replies(void **state)
{
    (void)state;
    aims_registry *mirror = NULL;
    assert_int_equal(aims_registry_create(&mirror), AIMS_OK);
    aims_msg *ok = reply_with(2, 2, "s1\ns2\n");
    assert_int_equal(aimsi_regsync_apply_once(mirror, ok), AIMS_OK);
    assert_int_equal(count_of(mirror, "s1"), 0); /* apply_once leaves nothing behind */
    aims_msg *short_ids = reply_with(2, 1, "s1\ns2\n");
    assert_int_equal(aimsi_regsync_apply_once(mirror, short_ids), AIMS_E_CORRUPT);
    aims_msg *short_names = reply_with(2, 2, "s1\n");
    assert_int_equal(aimsi_regsync_apply_once(mirror, short_names), AIMS_E_CORRUPT);
    aims_msg *empty = NULL;
    assert_int_equal(aims_msg_create(&empty), AIMS_OK);
    assert_int_equal(aimsi_regsync_apply_once(mirror, empty), AIMS_E_CORRUPT);
    aims_msg_destroy(ok);
    aims_msg_destroy(short_ids);
    aims_msg_destroy(short_names);
    aims_msg_destroy(empty);
    aims_registry_destroy(mirror);
}

int main(void)
{
    ta_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_changes_new_caller_gets_snapshot_then_events,
                                        ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_changes_compacted_history_gives_snapshot, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_mirror_follows_revisions, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_mirror_survives_restart_and_compaction, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_apply_rejects_malformed_replies, ta_setup,
                                        ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
