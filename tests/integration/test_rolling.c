/*
 * test_rolling.c -- rolling restart of every replica under steady load.
 *
 * Three echo instances (tcp, ipc, tcp) joined to a registry daemon; client
 * threads call them without pause. One at a time: SIGTERM a replica (the
 * daemon drains: leaves the registry, waits for balancers to notice, finishes
 * its work, exits 0), start its replacement on the same kind of address (the
 * ipc one on the very same path), wait until the replacement answers, next.
 * Each call spins 300 us in the handler, so every drain has work in flight.
 * Expected: zero failed calls, every replacement serving, clean exits.
 */
#include "itest.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    it_init(argc, argv, "rolling");
    char ipc[300];
    snprintf(ipc, sizeof ipc, "ipc://%s/e2.sock", it_dir());
    it_proc reg, e[3];
    it_spawn_registry(&reg, 100);
    const char *listen[3] = {"tcp://127.0.0.1:0", ipc, "tcp://127.0.0.1:0"};
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "e%d", i + 1);
        it_spawnl(&e[i], name, 20000, "--name", name, "--listen", listen[i], "--join", reg.addr,
                  "--echo", "echo", "--slow-us", "300", "--heartbeat-ms", "100", "--workers", "2",
                  (char *)NULL);
    }
    aims_client *c = it_client(reg.addr, 50);
    static it_load L = {.service = "echo", .method = "echo", .threads = 4, .payload = 512,
                        .timeout_ms = 5000};
    L.client = c;
    it_load_start(&L);
    for (int i = 0; i < 3; i++) {
        IT_CHECK(it_load_wait_pid(&L, e[i].pid, 0, 15000), "instance %s never answered (%s)",
                 e[i].name, L.first_error);
    }

    pid_t old_pid[3];
    for (int i = 0; i < 3; i++) {
        old_pid[i] = e[i].pid;
        const uint64_t t0 = it_now_ms();
        it_signal(&e[i], SIGTERM);
        const int st = it_wait_exit(&e[i], 20000);
        IT_CHECK(st != -1, "%s did not exit within 20 s of SIGTERM", e[i].name);
        IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: exit status %d after SIGTERM",
                 e[i].name, st);
        const uint64_t t1 = it_now_ms();
        char name[16];
        snprintf(name, sizeof name, "e%d-r", i + 1);
        it_spawnl(&e[i], name, 20000, "--name", name, "--listen", listen[i], "--join", reg.addr,
                  "--echo", "echo", "--slow-us", "300", "--heartbeat-ms", "100", "--workers", "2",
                  (char *)NULL);
        IT_CHECK(it_load_wait_pid(&L, e[i].pid, 0, 15000),
                 "replacement %s never answered (failed %llu: %s)", name,
                 (unsigned long long)atomic_load(&L.failed), L.first_error);
        it_log("replaced e%d: drained and exited in %llu ms, replacement serving after %llu ms; "
               "failed so far %llu",
               i + 1, (unsigned long long)(t1 - t0), (unsigned long long)(it_now_ms() - t1),
               (unsigned long long)atomic_load(&L.failed));
    }
    uint64_t old_ok[3];
    for (int i = 0; i < 3; i++) {
        old_ok[i] = it_load_pid_ok(&L, old_pid[i]);
    }
    it_sleep_ms(500);
    it_load_stop(&L);
    it_log("calls ok %llu, failed %llu, retries %.0f", (unsigned long long)atomic_load(&L.ok),
           (unsigned long long)atomic_load(&L.failed),
           it_metric_sum(aims_client_metrics(c), "aims_client_retries_total"));
    IT_CHECK(atomic_load(&L.failed) == 0, "failed calls: %llu, first: %s",
             (unsigned long long)atomic_load(&L.failed), L.first_error);
    for (int i = 0; i < 3; i++) {
        IT_CHECK(it_load_pid_ok(&L, old_pid[i]) == old_ok[i], "a stopped replica answered");
        IT_CHECK(it_load_pid_ok(&L, e[i].pid) > 0, "replacement %s idle", e[i].name);
    }
    aims_client_destroy(c);
    it_pass();
}
