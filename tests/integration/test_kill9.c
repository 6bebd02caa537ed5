/*
 * test_kill9.c -- three echo instances (tcp, ipc, tcp) under steady load from
 * several client threads; one is killed with SIGKILL (no drain, no
 * deregistration, its connections just vanish).
 *
 * Expected: zero failed idempotent calls (in-flight calls on the dead instance
 * are retried on another one); its lease expires in the registry within 3
 * heartbeat intervals (+ a generous slack for a loaded 2-core VM); the client
 * stops attempting it by then (its retry counter, which counts the attempts
 * that failed over to another instance, stops growing).
 *
 * With the argument "infer" (after the daemon path) the instances are infer
 * services over a small bundle (batching kind, worker threads) instead of echo.
 */
#include "itest.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#define HB_MS 100
#define SYNC_MS 50
#define SLACK_MS 1000 /* scheduling noise on a loaded VM, sanitizers */

int main(int argc, char **argv)
{
    const int infer = argc > 2 && strcmp(argv[2], "infer") == 0;
    it_init(argc, argv, infer ? "kill9-infer" : "kill9");
    char ipc[300], bundle[300], pipeline[300], svc_arg[320];
    snprintf(ipc, sizeof ipc, "ipc://%s/e2.sock", it_dir());
    snprintf(bundle, sizeof bundle, "%s/clf.bundle", it_dir());
    snprintf(pipeline, sizeof pipeline, "%s/clf.pipeline", it_dir());
    snprintf(svc_arg, sizeof svc_arg, "clf=%s", bundle);
    if (infer) {
        it_make_bundle(bundle, pipeline);
    }
    const char *svc_flag = infer ? "--infer" : "--echo";
    const char *service = infer ? "clf" : "echo";
    it_proc reg, e[3];
    it_spawn_registry(&reg, 100);
    const char *listen[3] = {"tcp://127.0.0.1:0", ipc, "tcp://127.0.0.1:0"};
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "e%d", i + 1);
        it_spawnl(&e[i], name, 20000, "--name", name, "--listen", listen[i], "--join", reg.addr,
                  svc_flag, infer ? svc_arg : "echo", "--heartbeat-ms", "100", "--workers", "2",
                  /* echo: 500 us per call, so calls are in flight on the victim */
                  "--slow-us", "500", (char *)NULL);
    }

    aims_client *c = it_client(reg.addr, SYNC_MS);
    aims_client *probe = it_client(NULL, SYNC_MS);
    static it_load L = {.method = "echo", .threads = 4, .payload = 256, .timeout_ms = 5000};
    L.client = c;
    L.service = service;
    L.infer = infer;
    if (infer) {
        L.method = "predict";
    }
    it_load_start(&L);
    for (int i = 0; i < 3 && !infer; i++) {
        IT_CHECK(it_load_wait_pid(&L, e[i].pid, 0, 15000), "instance %s never answered (%s)",
                 e[i].name, L.first_error);
    }
    /* Infer replies carry no pid: wait until the registry lists all three. */
    char list[8192];
    const uint64_t t_up = it_now_ms();
    while (it_registry_addrs(probe, reg.addr, service, list, sizeof list) != 3) {
        IT_CHECK(it_now_ms() - t_up < 15000, "the registry never listed 3 instances");
        it_sleep_ms(20);
    }
    it_sleep_ms(500);
    const uint64_t ok0 = atomic_load(&L.ok);
    IT_CHECK(atomic_load(&L.failed) == 0, "failures before the kill: %s", L.first_error);

    /* Kill the ipc instance: the least convenient one (its socket file stays). */
    it_proc *victim = &e[1];
    char vaddr[256];
    snprintf(vaddr, sizeof vaddr, "%s", victim->addr);
    const pid_t vpid = victim->pid;
    const double retries0 = it_metric_sum(aims_client_metrics(c), "aims_client_retries_total");
    const uint64_t t_kill = it_now_ms();
    it_signal(victim, SIGKILL);
    IT_CHECK(it_wait_exit(victim, 5000) != -1, "SIGKILLed instance did not exit");
    it_log("killed %s (pid %ld) at t=0", vaddr, (long)vpid);

    /* Watch the registry view and the client's failover attempts. */
    uint64_t t_gone = 0, t_last_retry = t_kill;
    double retries = retries0;
    while (it_now_ms() - t_kill < 3 * HB_MS + SLACK_MS + 2000) {
        const int n = it_registry_addrs(probe, reg.addr, service, list, sizeof list);
        if (t_gone == 0 && n >= 0 && !it_list_has(list, vaddr)) {
            t_gone = it_now_ms();
        }
        const double r = it_metric_sum(aims_client_metrics(c), "aims_client_retries_total");
        if (r != retries) {
            retries = r;
            t_last_retry = it_now_ms();
        }
        it_sleep_ms(5);
    }
    const uint64_t dead_after = it_load_pid_ok(&L, vpid);
    it_sleep_ms(500);
    it_load_stop(&L);

    const uint64_t total = atomic_load(&L.ok);
    it_log("calls ok %llu (%llu after the kill), failed %llu, retries %.0f",
           (unsigned long long)total, (unsigned long long)(total - ok0),
           (unsigned long long)atomic_load(&L.failed), retries - retries0);
    it_log("registry dropped the dead instance after %lld ms; last failover attempt at %lld ms "
           "(bound %d ms = 3 heartbeats + %d ms slack)",
           t_gone ? (long long)(t_gone - t_kill) : -1LL, (long long)(t_last_retry - t_kill),
           3 * HB_MS + SLACK_MS, SLACK_MS);
    IT_CHECK(atomic_load(&L.failed) == 0, "failed calls: %llu, first: %s",
             (unsigned long long)atomic_load(&L.failed), L.first_error);
    IT_CHECK(total > ok0, "no calls completed after the kill");
    IT_CHECK(t_gone != 0, "the registry still lists the dead instance %s", vaddr);
    IT_CHECK(t_gone - t_kill <= 3 * HB_MS + SLACK_MS, "registry detection took %llu ms",
             (unsigned long long)(t_gone - t_kill));
    IT_CHECK(t_last_retry - t_kill <= 3 * HB_MS + SLACK_MS,
             "the client still attempted the dead instance %llu ms after the kill",
             (unsigned long long)(t_last_retry - t_kill));
    IT_CHECK(it_load_pid_ok(&L, vpid) == dead_after, "a dead pid answered");
    for (int i = 0; i < 3 && !infer; i += 2) {
        IT_CHECK(it_load_pid_ok(&L, e[i].pid) > 0, "survivor %s idle", e[i].name);
    }
    aims_client_destroy(c);
    aims_client_destroy(probe);
    it_pass();
}
