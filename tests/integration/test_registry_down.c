/*
 * test_registry_down.c -- static stability when the registry process dies.
 *
 * A registry daemon, two echo instances (tcp, ipc) joined to it, client
 * threads joined to it under steady load. The registry is killed with
 * SIGKILL. Expected while it is down: zero failed calls, both known instances
 * keep answering (a client never evicts healthy instances because the
 * registry went away), and a third instance started meanwhile still comes up
 * (its node keeps retrying the join). Then the registry restarts on the same
 * address, empty: the instances re-register on their next heartbeat, the
 * third one and a fourth started afterwards become visible and get traffic --
 * still with zero failed calls (an empty registry right after the restart must
 * not make the clients forget the instances they know).
 */
#include "itest.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#define DOWN_MS 2500 /* many lease periods (3 x 100 ms) and client syncs (50 ms) */

static void spawn_echo(it_proc *p, const char *name, const char *listen, const char *reg)
{
    it_spawnl(p, name, 20000, "--name", name, "--listen", listen, "--join", reg, "--echo", "echo",
              "--heartbeat-ms", "100", "--workers", "2", (char *)NULL);
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "registry_down");
    char ipc[300];
    snprintf(ipc, sizeof ipc, "ipc://%s/e2.sock", it_dir());
    it_proc reg, e[4];
    it_spawn_registry(&reg, 100);
    char reg_url[256];
    snprintf(reg_url, sizeof reg_url, "%s", reg.addr); /* port resolved: reused on restart */
    spawn_echo(&e[0], "e1", "tcp://127.0.0.1:0", reg_url);
    spawn_echo(&e[1], "e2", ipc, reg_url);

    /* Round robin, not P2C: every instance in the client's view gets its share,
     * so "no traffic" means "not in the view" (P2C may starve an instance whose
     * latency average is high for seconds, by design). */
    aims_client *c = it_client(reg_url, 50);
    IT_CHECK(aims_client_set_param_i64(c, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN) == AIMS_OK,
             "lb policy: %s", aims_client_errmsg(c));
    aims_client *probe = it_client(NULL, 50);
    static it_load L = {.service = "echo", .method = "echo", .threads = 3, .payload = 256,
                        .timeout_ms = 5000, .pause_us = 100};
    L.client = c;
    it_load_start(&L);
    for (int i = 0; i < 2; i++) {
        IT_CHECK(it_load_wait_pid(&L, e[i].pid, 0, 15000), "%s never answered (%s)", e[i].name,
                 L.first_error);
    }

    /* Registry down. */
    it_signal(&reg, SIGKILL);
    IT_CHECK(it_wait_exit(&reg, 5000) != -1, "registry did not die");
    it_log("registry killed");
    const uint64_t a0 = it_load_pid_ok(&L, e[0].pid), b0 = it_load_pid_ok(&L, e[1].pid);
    spawn_echo(&e[2], "e3", "tcp://127.0.0.1:0", reg_url); /* joins an absent registry */
    it_sleep_ms(DOWN_MS);
    const uint64_t a1 = it_load_pid_ok(&L, e[0].pid), b1 = it_load_pid_ok(&L, e[1].pid);
    it_log("while the registry was down: e1 answered %llu, e2 %llu calls; failed %llu",
           (unsigned long long)(a1 - a0), (unsigned long long)(b1 - b0),
           (unsigned long long)atomic_load(&L.failed));
    IT_CHECK(atomic_load(&L.failed) == 0, "failed calls while the registry was down: %s",
             L.first_error);
    IT_CHECK(a1 > a0 && b1 > b0, "a known instance got no traffic while the registry was down");
    IT_CHECK(it_load_pid_ok(&L, e[2].pid) == 0, "e3 is visible without a registry?");

    /* Registry back, same address, empty. */
    const uint64_t failed_before_restart = atomic_load(&L.failed);
    it_spawnl(&reg, "registry2", 20000, "--name", "reg", "--listen", reg_url, "--host-registry",
              "--heartbeat-ms", "100", (char *)NULL);
    IT_CHECK(strcmp(reg.addr, reg_url) == 0, "restarted registry at %s, not %s", reg.addr,
             reg_url);
    const uint64_t t_back = it_now_ms();
    IT_CHECK(it_load_wait_pid(&L, e[2].pid, 0, 15000),
             "e3 (started while the registry was down) never got traffic (failed %llu: %s)",
             (unsigned long long)atomic_load(&L.failed), L.first_error);
    it_log("e3 serving %llu ms after the registry came back",
           (unsigned long long)(it_now_ms() - t_back));
    spawn_echo(&e[3], "e4", "tcp://127.0.0.1:0", reg_url);
    IT_CHECK(it_load_wait_pid(&L, e[3].pid, 0, 15000), "e4 never got traffic (%s)",
             L.first_error);
    char list[8192];
    int listed = -1;
    const uint64_t t_list = it_now_ms();
    while (it_now_ms() - t_list < 10000) {
        listed = it_registry_addrs(probe, reg_url, "echo", list, sizeof list);
        if (listed == 4) {
            break;
        }
        it_sleep_ms(20);
    }
    IT_CHECK(listed == 4, "the restarted registry lists %d instances, not 4:\n%s", listed,
             listed > 0 ? list : "");
    for (int i = 0; i < 4; i++) {
        IT_CHECK(it_list_has(list, e[i].addr), "%s (%s) not re-registered; registry lists:\n%s",
                 e[i].name, e[i].addr, list);
    }
    const uint64_t a2 = it_load_pid_ok(&L, e[0].pid), b2 = it_load_pid_ok(&L, e[1].pid);
    it_sleep_ms(1000);
    it_log("last second: e1 answered %llu calls, e2 %llu",
           (unsigned long long)(it_load_pid_ok(&L, e[0].pid) - a2),
           (unsigned long long)(it_load_pid_ok(&L, e[1].pid) - b2));
    it_load_stop(&L);
    it_log("calls ok %llu, failed %llu (%llu of them after the registry restart)",
           (unsigned long long)atomic_load(&L.ok), (unsigned long long)atomic_load(&L.failed),
           (unsigned long long)(atomic_load(&L.failed) - failed_before_restart));
    for (int i = 0; i < 4; i++) {
        it_log("%s answered %llu calls in total", e[i].name,
               (unsigned long long)it_load_pid_ok(&L, e[i].pid));
    }
    IT_CHECK(atomic_load(&L.failed) == 0, "failed calls: %llu, first: %s",
             (unsigned long long)atomic_load(&L.failed), L.first_error);
    if (it_load_pid_ok(&L, e[0].pid) == a2 || it_load_pid_ok(&L, e[1].pid) == b2) {
        /* Tell a stale client view from unreachable instances: a client that
         * joins now (fresh mirror) should reach all four. */
        aims_client *fresh = it_client(reg_url, 50);
        (void)aims_client_set_param_i64(fresh, AIMS_CLIENT_LB_POLICY, AIMS_LB_ROUND_ROBIN);
        static it_load F = {.service = "echo", .method = "echo", .threads = 2, .payload = 64,
                            .timeout_ms = 5000};
        F.client = fresh;
        it_load_start(&F);
        it_sleep_ms(1000);
        it_load_stop(&F);
        it_fail("after the registry restart the long-lived client sent e1 %llu and e2 %llu calls "
                "in a second, although the registry lists both; a client joined afterwards "
                "sent e1 %llu, e2 %llu, e3 %llu, e4 %llu calls (failed %llu): the long-lived "
                "client's registry mirror is stale",
                (unsigned long long)(it_load_pid_ok(&L, e[0].pid) - a2),
                (unsigned long long)(it_load_pid_ok(&L, e[1].pid) - b2),
                (unsigned long long)it_load_pid_ok(&F, e[0].pid),
                (unsigned long long)it_load_pid_ok(&F, e[1].pid),
                (unsigned long long)it_load_pid_ok(&F, e[2].pid),
                (unsigned long long)it_load_pid_ok(&F, e[3].pid),
                (unsigned long long)atomic_load(&F.failed));
    }
    aims_client_destroy(c);
    aims_client_destroy(probe);
    it_pass();
}
