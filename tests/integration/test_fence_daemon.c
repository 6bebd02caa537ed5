/*
 * test_fence_daemon.c -- fencing of durable training jobs across processes
 * (docs/JOBS.md "Fencing", issue 16's test "a paused train node that loses
 * its lease and comes back cannot publish").
 *
 * Two aims_node --train trainer --train-store DIR on tcp://127.0.0.1 share
 * one store. A Fashion-MNIST job (a subset of rows, 2 epochs) runs on the
 * "zombie" node; once it has checkpointed, the zombie is paused with SIGSTOP
 * until its lease expires and the other node ("survivor") adopts the job;
 * then it is resumed with SIGCONT while the survivor still trains.
 *
 * Expected: the zombie notices at its next lease renewal or write that its
 * fencing token is no longer the highest and stops the job: its log (its
 * stderr, captured to a file) says "fenced"; the job record names the
 * survivor with token 2 and one adoption; there is exactly one result in the
 * store, written by the survivor, and its bytes equal an uninterrupted run of
 * the same spec. No timing assertions: every wait is a bounded poll.
 *
 * The survivor, the stored rows and the uninterrupted run are the rig of
 * jobs_itest.c (shared with test_jobs_daemon.c).
 *
 * Skipped (77) without the Fashion-MNIST cache (AIMS_DATA_DIR).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aims/aims.h>

#include "itest.h"
#include "jobs_itest.h"

static const char SPEC[] = "kind=mlp hidden=128 activation=relu epochs=2 batch=32 lr=0.05 "
                           "seed=5 train_threads=1 checkpoint_every_steps=40 "
                           "checkpoint_every_ms=0";

/* The zombie's stderr goes to log_path: fd 2 is pointed there while it is spawned. */
static void spawn_logged(it_proc *p, const char *name, const char *log_path)
{
    const int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    IT_CHECK(fd >= 0, "open %s", log_path);
    fflush(stderr);
    const int saved = dup(2);
    IT_CHECK(saved >= 0 && dup2(fd, 2) == 2, "dup2");
    jobs_spawn_trainer(p, name);
    fflush(stderr);
    IT_CHECK(dup2(saved, 2) == 2, "restore stderr");
    close(saved);
    close(fd);
}

/* 1 when the file holds s; the line it is on goes to the test's log. */
static int file_has(const char *path, const char *s)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f) != NULL) {
        found = strstr(line, s) != NULL;
    }
    if (found) {
        line[strcspn(line, "\n")] = '\0';
        it_log("zombie log: %s", line);
    }
    fclose(f);
    return found;
}

int main(int argc, char **argv)
{
    it_init(argc, argv, "fence_daemon");
    jobs_rig r;
    if (!jobs_rig_start(&r, SPEC)) {
        return 77;
    }
    aims_client *c = r.c;
    aims_msg *rep = r.rep;
    char log_path[400];
    snprintf(log_path, sizeof log_path, "%s/zombie.log", it_dir());
    it_proc zombie;

    /* the job on the zombie-to-be, paused past its lease after a checkpoint */
    spawn_logged(&zombie, "zombie", log_path);
    const char *job = "fence";
    IT_CHECK(jobs_call(c, zombie.addr, "submit", job, r.ref, rep) == AIMS_OK, "submit: %s",
             aims_msg_error(rep));
    const int64_t pause_at = JOBS_CKPT_EVERY + 10;
    jobs_wait(c, zombie.addr, job, rep, jobs_step_at_least, &pause_at, "before the pause");
    IT_CHECK(jobs_int(rep, "token") == 1, "token %lld before the pause",
             (long long)jobs_int(rep, "token"));
    it_signal(&zombie, SIGSTOP);
    it_log("SIGSTOP zombie pid %ld at step >= %lld", (long)zombie.pid,
           (long long)jobs_int(rep, "step"));
    jobs_wait(c, r.survivor.addr, job, rep, jobs_running_on, &r.survivor.pid, "adoption");
    IT_CHECK(jobs_int(rep, "token") == 2, "token %lld after the adoption",
             (long long)jobs_int(rep, "token"));
    it_signal(&zombie, SIGCONT);
    it_log("SIGCONT zombie after the survivor adopted the job (token 2)");

    /* the zombie finds out it is fenced (bounded poll of its log) */
    const uint64_t t0 = it_now_ms();
    while (!file_has(log_path, "fenced")) {
        IT_CHECK(it_now_ms() - t0 < 60000, "the zombie never logged that it was fenced (%s)",
                 log_path);
        it_sleep_ms(20);
    }
    it_log("zombie log says it was fenced");

    jobs_wait(c, r.survivor.addr, job, rep, jobs_is_done, NULL, "after the pause");
    char owner[160], pid[32];
    snprintf(pid, sizeof pid, "/%ld/", (long)r.survivor.pid);
    IT_CHECK(strstr(jobs_str(rep, "owner", owner, sizeof owner), pid) != NULL,
             "finished by %s, not by the survivor", owner);
    IT_CHECK(jobs_int(rep, "token") == 2 && jobs_int(rep, "adoptions") == 1,
             "token %lld, adoptions %lld", (long long)jobs_int(rep, "token"),
             (long long)jobs_int(rep, "adoptions"));
    /* the zombie, asked directly, does not claim the job: it answers from the store */
    IT_CHECK(jobs_call(c, zombie.addr, "status", job, NULL, rep) == AIMS_OK, "zombie status: %s",
             aims_msg_error(rep));
    IT_CHECK(jobs_int(rep, "state") == 2 &&
                 strstr(jobs_str(rep, "owner", owner, sizeof owner), pid) != NULL,
             "the zombie reports state %lld, owner %s", (long long)jobs_int(rep, "state"),
             owner);
    size_t len = 0;
    void *got = jobs_result(c, zombie.addr, job, &len);
    IT_CHECK(len == r.ref_len && memcmp(got, r.ref_bytes, len) == 0,
             "the fenced job's result differs from the uninterrupted run");
    free(got);
    IT_CHECK(jobs_results_in_store(job) == 1, "not exactly one result");
    it_log("one result, equal to the uninterrupted run's %zu bytes", len);

    it_signal(&zombie, SIGTERM);
    jobs_rig_stop(&r);
    (void)it_wait_exit(&zombie, 30000);
    it_pass();
}
