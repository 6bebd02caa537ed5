/*
 * test_hung.c -- a hung instance costs latency, not errors (issue 11).
 *
 * Three echo instances behind one client under a steady idempotent load with
 * 2 s deadlines. One instance is SIGSTOPped for 4 s: it still holds its
 * connection and its kernel buffers accept requests, so nothing fails fast;
 * the calls already on it must be abandoned at their per-try timeout
 * (client_try.c) and retried elsewhere. Expected: 0 failed calls, during the
 * stop and after the SIGCONT, and the stopped instance answering again
 * afterwards (back in rotation).
 *
 * Then another instance is made slow for a while (SIGSTOP for 1 s, shorter
 * than its lease, so the registry keeps it): its latency memory in the
 * client's balancer is seconds while the others answer in about a
 * millisecond. Once it is fast again it must be back in rotation within the
 * bound the balancer states (LB_STALE_NS = 1 s without a sample -> probed;
 * plus the health tracker's 1 s active probe if it was ejected): checked as
 * answering again within RECOVER_MS.
 */
#include "itest.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#define RECOVER_MS 5000

int main(int argc, char **argv)
{
    it_init(argc, argv, "hung");
    it_proc reg;
    it_spawn_registry(&reg, 500);
    it_proc node[3];
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "echo%d", i);
        it_spawnl(&node[i], name, 20000, "--name", name, "--listen", "tcp://127.0.0.1:0",
                  "--join", reg.addr, "--echo", "echo", "--slow-us", "1000", "--workers", "2",
                  "--heartbeat-ms", "500", (char *)NULL);
    }
    aims_client *c = it_client(reg.addr, 50);
    it_load L = {.client = c, .service = "echo", .method = "echo", .threads = 6,
                 .payload = 256, .timeout_ms = 2000, .pause_us = 2000,
                 .mu = PTHREAD_MUTEX_INITIALIZER};
    it_load_start(&L);
    for (int i = 0; i < 3; i++) {
        IT_CHECK(it_load_wait_pid(&L, node[i].pid, 0, 20000), "%s never answered",
                 node[i].name);
    }
    /* Steady state: the client has seen enough calls to split deadlines into
     * tries (client_try.c: not before 8 successes; a call started before that
     * gets its whole deadline on one instance). */
    it_sleep_ms(1000);
    const uint64_t ok0 = atomic_load(&L.ok);
    it_log("all three answer; stopping %s (pid %ld) for 4 s", node[1].name, (long)node[1].pid);
    it_signal(&node[1], SIGSTOP);
    it_sleep_ms(4000);
    const uint64_t failed_stopped = atomic_load(&L.failed);
    const uint64_t ok_stopped = atomic_load(&L.ok) - ok0;
    it_signal(&node[1], SIGCONT);
    const uint64_t base = it_load_pid_ok(&L, node[1].pid);
    const int back = it_load_wait_pid(&L, node[1].pid, base, 15000);
    /* Slow for a while, then fast again. */
    it_sleep_ms(500);
    it_signal(&node[2], SIGSTOP);
    it_sleep_ms(1000);
    it_signal(&node[2], SIGCONT);
    const uint64_t t_cont = it_now_ms();
    const uint64_t base2 = it_load_pid_ok(&L, node[2].pid);
    const int back2 = it_load_wait_pid(&L, node[2].pid, base2, RECOVER_MS);
    it_log("%s slow for 1 s: answering again %llu ms after it recovered (bound %d ms)",
           node[2].name, (unsigned long long)(it_now_ms() - t_cont), RECOVER_MS);
    it_sleep_ms(200);
    it_load_stop(&L);
    it_log("while stopped: %llu ok, %llu failed; after SIGCONT %s back in rotation: %s; total "
           "ok %llu, failed %llu",
           (unsigned long long)ok_stopped, (unsigned long long)failed_stopped, node[1].name,
           back ? "yes" : "no", (unsigned long long)atomic_load(&L.ok),
           (unsigned long long)atomic_load(&L.failed));
    IT_CHECK(atomic_load(&L.failed) == 0, "%llu idempotent calls failed, first: %s",
             (unsigned long long)atomic_load(&L.failed), L.first_error);
    IT_CHECK(ok_stopped > 0, "no call succeeded while one instance was stopped");
    IT_CHECK(back, "%s did not answer again after SIGCONT", node[1].name);
    IT_CHECK(back2, "%s not back in rotation %d ms after it recovered", node[2].name,
             RECOVER_MS);
    aims_client_destroy(c);
    it_pass();
}
