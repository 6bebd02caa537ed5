/*
 * test_jobs_daemon.c -- durable training jobs across processes (docs/JOBS.md):
 * aims_node --train trainer --train-store DIR on tcp://127.0.0.1, a
 * Fashion-MNIST job (a subset of rows, a few epochs, so the test stays
 * bounded), and the node running it killed with SIGKILL at three points.
 *
 * Expected each time: the job finishes on the surviving node, its result is
 * byte-for-byte the result of an uninterrupted run of the same spec, there is
 * exactly one result in the store, and the work redone is at most one
 * checkpoint interval (the job's own record: lost_steps <= ckpt_every).
 * The rows are stored once ("put_data") and every submit names them by
 * reference. Prints P14b: ms from the kill to the job running on the
 * survivor, next to the lease (heartbeat) interval.
 *
 * The survivor, the stored rows and the uninterrupted run are the rig of
 * jobs_itest.c (shared with test_fence_daemon.c).
 *
 * Skipped (77) without the Fashion-MNIST cache (AIMS_DATA_DIR).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <aims/aims.h>

#include "itest.h"
#include "jobs_itest.h"

static const char SPEC[] = "kind=mlp hidden=128 activation=relu epochs=4 batch=32 lr=0.05 "
                           "seed=5 train_threads=1 checkpoint_every_steps=40 "
                           "checkpoint_every_ms=0";

int main(int argc, char **argv)
{
    it_init(argc, argv, "jobs_daemon");
    jobs_rig r;
    if (!jobs_rig_start(&r, SPEC)) {
        return 77;
    }
    aims_client *c = r.c;
    aims_msg *rep = r.rep;
    it_proc victim;

    const int64_t kill_at[3] = {60, 200, 330}; /* steps (188 per epoch): epochs 1, 2, 2 */
    for (int k = 0; k < 3; k++) {
        char job[32], name[32];
        snprintf(job, sizeof job, "kill-%d", k);
        snprintf(name, sizeof name, "victim%d", k);
        jobs_spawn_trainer(&victim, name);
        const aims_status rc = jobs_call(c, victim.addr, "submit", job, r.ref, rep);
        IT_CHECK(rc == AIMS_OK, "submit %s: %s (%s)", job, aims_status_name(rc),
                 aims_msg_error(rep));
        jobs_wait(c, victim.addr, job, rep, jobs_step_at_least, &kill_at[k], "before the kill");
        const int64_t seen = jobs_int(rep, "step");
        it_signal(&victim, SIGKILL);
        const uint64_t t_kill = it_now_ms();
        (void)it_wait_exit(&victim, 10000);
        jobs_wait(c, r.survivor.addr, job, rep, jobs_running_on, &r.survivor.pid, "adoption");
        const uint64_t t_run = it_now_ms();
        jobs_wait(c, r.survivor.addr, job, rep, jobs_is_done, NULL, "after the kill");
        const int64_t resumed = jobs_int(rep, "resumed_from");
        const int64_t lost = jobs_int(rep, "lost_steps");
        const int64_t every = jobs_int(rep, "ckpt_every");
        it_log("%s: killed at step >= %lld, resumed from %lld, lost %lld steps (interval %lld); "
               "P14b kill -> running elsewhere %llu ms (lease %d ms, renewed every %d ms)",
               job, (long long)seen, (long long)resumed, (long long)lost, (long long)every,
               (unsigned long long)(t_run - t_kill), JOBS_LEASE_MS, JOBS_LEASE_MS / 3);
        IT_CHECK(jobs_int(rep, "adoptions") == 1, "adoptions %lld",
                 (long long)jobs_int(rep, "adoptions"));
        IT_CHECK(resumed >= seen, "resumed from %lld, the victim had checkpointed step %lld",
                 (long long)resumed, (long long)seen);
        IT_CHECK(every == JOBS_CKPT_EVERY && lost >= 0 && lost <= JOBS_CKPT_EVERY,
                 "lost %lld steps, more than one interval (%lld)", (long long)lost,
                 (long long)every);
        size_t len = 0;
        void *got = jobs_result(c, r.survivor.addr, job, &len);
        IT_CHECK(len == r.ref_len && memcmp(got, r.ref_bytes, len) == 0,
                 "%s: the resumed result differs from the uninterrupted run", job);
        free(got);
        IT_CHECK(jobs_results_in_store(job) == 1, "%s: not exactly one result", job);
    }
    jobs_rig_stop(&r);
    it_pass();
}
