/*
 * test_etcd.c -- aims_node daemons and clients on a real 3-member etcd.
 *
 * A 3-member etcd cluster on loopback (tests/support/etcd_proc.c), two echo
 * daemons started with `--join etcd://m0,m1,m2/<prefix>`, client threads joined
 * with aims_client_join(cl, "etcd://...") under steady idempotent load.
 *
 *   1. Calls by name reach both daemons (registration and the watch work).
 *   2. The etcd leader is killed with SIGKILL: zero failed calls, and after
 *      the new election a client joining afresh still sees both instances
 *      (heartbeats fail over to the live members, leases survive).
 *   3. All of etcd is stopped for a few seconds: zero failed calls, both known
 *      instances keep answering (the clients serve from their last view), and
 *      a third daemon started meanwhile comes up anyway. etcd returns (same
 *      data): the third instance registers, gets traffic, and every instance
 *      is listed by a fresh client.
 *   4. A daemon paused with SIGSTOP past its lease disappears from etcd and
 *      registers again after SIGCONT (counted with etcdctl).
 *
 * Skipped (77) when no etcd binary is installed.
 */
#include "itest.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_proc.h"

#define DOWN_MS 3000

static etcd_cluster g_etcd;

static void stop_etcd(void)
{
    etcd_cluster_stop(&g_etcd);
}

static void spawn_echo(it_proc *p, const char *name, const char *url)
{
    it_spawnl(p, name, 20000, "--name", name, "--listen", "tcp://127.0.0.1:0", "--join", url,
              "--echo", "echo", "--heartbeat-ms", "300", "--workers", "2", (char *)NULL);
}

/* How many of the n daemons a freshly joined client (round robin) reaches
 * within timeout_ms: its view comes from etcd alone. */
static size_t fresh_view(const char *url, const it_proc *p, size_t n, int timeout_ms)
{
    aims_client *c = it_client(url, 50);
    IT_CHECK(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN) == AIMS_OK,
             "lb policy: %s", aims_client_errmsg(c));
    static it_load F;
    memset(&F, 0, sizeof F);
    F.service = "echo";
    F.method = "echo";
    F.threads = 1;
    F.payload = 16;
    F.timeout_ms = 5000;
    F.pause_us = 1000;
    F.client = c;
    it_load_start(&F);
    size_t seen = 0;
    for (size_t i = 0; i < n; i++) {
        seen += (size_t)it_load_wait_pid(&F, p[i].pid, 0, timeout_ms);
    }
    it_load_stop(&F);
    aims_client_destroy(c);
    return seen;
}

/* Instances registered under the URL's prefix, read with etcdctl (the
 * store's own client, not ours); -1 when etcdctl fails. */
static int registered(const char *url)
{
    char cmd[600];
    const char *prefix = strrchr(url, '/');
    snprintf(cmd, sizeof cmd, "ETCDCTL_API=3 etcdctl --endpoints=%s get --prefix --keys-only "
             "'%s/svc/echo/' 2>/dev/null", g_etcd.endpoints, prefix);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        return -1;
    }
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, p) != NULL) {
        n += strstr(line, "/svc/echo/") != NULL;
    }
    return pclose(p) == 0 ? n : -1;
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "etcd");
    if (!etcd_available()) {
        it_log("no etcd binary (Debian etcd-server): skipped");
        exit(77);
    }
    IT_CHECK(etcd_cluster_start(&g_etcd, 3) == 0, "cannot start a 3-member etcd");
    atexit(stop_etcd);
    char url[400];
    snprintf(url, sizeof url, "etcd://%s/it-%d", g_etcd.endpoints, (int)getpid());
    it_log("etcd cluster up: %s", url);

    it_proc e[3];
    spawn_echo(&e[0], "e1", url);
    spawn_echo(&e[1], "e2", url);
    aims_client *c = it_client(url, 50);
    IT_CHECK(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN) == AIMS_OK,
             "lb policy: %s", aims_client_errmsg(c));
    static it_load L = {.service = "echo", .method = "echo", .threads = 3, .payload = 256,
                        .timeout_ms = 5000, .pause_us = 200};
    L.client = c;
    it_load_start(&L);
    for (int i = 0; i < 2; i++) {
        IT_CHECK(it_load_wait_pid(&L, e[i].pid, 0, 15000), "%s never answered (%s)", e[i].name,
                 L.first_error);
    }
    it_log("1. both daemons answer calls by name through etcd");

    /* 2. Leader kill -9. */
    const int leader = etcd_leader(&g_etcd);
    IT_CHECK(leader >= 0, "no etcd leader found");
    etcd_member_stop(&g_etcd, leader, SIGKILL);
    it_log("2. etcd leader m%d killed", leader);
    const uint64_t a0 = it_load_pid_ok(&L, e[0].pid), b0 = it_load_pid_ok(&L, e[1].pid);
    it_sleep_ms(DOWN_MS);
    IT_CHECK(it_load_pid_ok(&L, e[0].pid) > a0 && it_load_pid_ok(&L, e[1].pid) > b0,
             "an instance got no traffic after the leader died");
    const size_t seen = fresh_view(url, e, 2, 15000);
    IT_CHECK(seen == 2, "a fresh client sees %zu instances after the leader died, not 2", seen);
    IT_CHECK(atomic_load(&L.failed) == 0, "failed calls after the leader kill: %s",
             L.first_error);
    IT_CHECK(etcd_member_restart(&g_etcd, leader) == 0, "m%d did not come back", leader);
    it_log("   0 failed calls, instances stay registered, m%d back", leader);

    /* 3. All of etcd down for a while. */
    for (int i = 0; i < 3; i++) {
        etcd_member_stop(&g_etcd, i, SIGKILL);
    }
    it_log("3. all of etcd stopped");
    const uint64_t a1 = it_load_pid_ok(&L, e[0].pid), b1 = it_load_pid_ok(&L, e[1].pid);
    spawn_echo(&e[2], "e3", url); /* joins an absent etcd: comes up, keeps trying */
    it_sleep_ms(DOWN_MS);
    IT_CHECK(atomic_load(&L.failed) == 0, "failed calls while etcd was down: %s",
             L.first_error);
    IT_CHECK(it_load_pid_ok(&L, e[0].pid) > a1 && it_load_pid_ok(&L, e[1].pid) > b1,
             "a known instance got no traffic while etcd was down");
    IT_CHECK(it_load_pid_ok(&L, e[2].pid) == 0, "e3 visible without etcd?");
    for (int i = 0; i < 3; i++) {
        IT_CHECK(etcd_member_start(&g_etcd, i) == 0, "cannot restart m%d", i);
    }
    for (int i = 0; i < 3; i++) {
        IT_CHECK(etcd_member_wait(&g_etcd, i, 20000) == 0, "m%d not healthy again", i);
    }
    const uint64_t t_back = it_now_ms();
    IT_CHECK(it_load_wait_pid(&L, e[2].pid, 0, 20000),
             "e3 (started while etcd was down) never got traffic (failed %llu: %s)",
             (unsigned long long)atomic_load(&L.failed), L.first_error);
    it_log("   e3 serving %llu ms after etcd came back",
           (unsigned long long)(it_now_ms() - t_back));
    const size_t all = fresh_view(url, e, 3, 15000);
    IT_CHECK(all == 3, "a fresh client sees %zu instances after etcd returned, not 3", all);
    it_load_stop(&L);
    it_log("calls ok %llu, failed %llu", (unsigned long long)atomic_load(&L.ok),
           (unsigned long long)atomic_load(&L.failed));
    IT_CHECK(atomic_load(&L.failed) == 0, "failed calls: %s", L.first_error);
    aims_client_destroy(c);

    /* 4. A node paused (SIGSTOP) past its lease: etcd removes it; on SIGCONT
     * its next keep-alive finds the lease gone and it registers again. */
    IT_CHECK(registered(url) == 3, "expected 3 instances in etcd, found %d", registered(url));
    it_signal(&e[0], SIGSTOP);
    const uint64_t t_stop = it_now_ms();
    while (registered(url) != 2 && it_now_ms() - t_stop < 20000) {
        it_sleep_ms(100);
    }
    IT_CHECK(registered(url) == 2, "the paused node's lease did not expire");
    it_log("4. e1 paused: its lease expired after %llu ms",
           (unsigned long long)(it_now_ms() - t_stop));
    it_signal(&e[0], SIGCONT);
    const uint64_t t_cont = it_now_ms();
    while (registered(url) != 3 && it_now_ms() - t_cont < 20000) {
        it_sleep_ms(100);
    }
    IT_CHECK(registered(url) == 3, "e1 did not register again after SIGCONT");
    it_log("   e1 resumed: registered again after %llu ms",
           (unsigned long long)(it_now_ms() - t_cont));
    it_pass();
}
