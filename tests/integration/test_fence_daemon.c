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
 * Skipped (77) without the Fashion-MNIST cache (AIMS_DATA_DIR).
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <aims/aims.h>

#include "itest.h"

#define ROWS 6000
#define LEASE_MS 1000
#define CKPT_EVERY 40
#define SVC "trainer"

static const char SPEC[] = "kind=mlp hidden=128 activation=relu epochs=2 batch=32 lr=0.05 "
                           "seed=5 train_threads=1 checkpoint_every_steps=40 "
                           "checkpoint_every_ms=0";

static char g_store[300];
static char g_flag[400];

static aims_msg *new_msg(void)
{
    aims_msg *m = NULL;
    IT_CHECK(aims_msg_create(&m) == AIMS_OK, "msg");
    return m;
}

static void put_str(aims_msg *m, const char *name, const char *s)
{
    const uint64_t n = strlen(s);
    IT_CHECK(aims_msg_add(m, name, AIMS_DT_BYTES, &n, 1, s, 0) == AIMS_OK, "add %s", name);
}

static int64_t get_int(const aims_msg *m, const char *name)
{
    size_t idx = 0;
    const void *p = NULL;
    aims_dtype dt = 0;
    IT_CHECK(aims_msg_find(m, name, &idx) == AIMS_OK, "reply lacks %s", name);
    IT_CHECK(aims_msg_get_tensor(m, idx, NULL, &dt, NULL, NULL, &p, NULL) == AIMS_OK, "tensor");
    if (dt == AIMS_DT_I32) {
        int32_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    int64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static const char *get_str(const aims_msg *m, const char *name, char *buf, size_t cap)
{
    size_t idx = 0;
    const void *p = NULL;
    size_t n = 0;
    buf[0] = '\0';
    if (aims_msg_find(m, name, &idx) == AIMS_OK &&
        aims_msg_get_tensor(m, idx, NULL, NULL, NULL, NULL, &p, &n) == AIMS_OK) {
        snprintf(buf, cap, "%.*s", (int)n, (const char *)p);
    }
    return buf;
}

/* One call on addr; the status (the reply in rep). */
static aims_status job_call(aims_client *c, const char *addr, const char *method,
                            const char *job, const char *data_ref, aims_msg *rep)
{
    aims_msg *req = new_msg();
    put_str(req, "job", job);
    char handle[80];
    snprintf(handle, sizeof handle, "handle-of-%s-0123456789", job);
    put_str(req, "handle", handle);
    if (data_ref != NULL) {
        put_str(req, "data", data_ref);
        put_str(req, "spec", SPEC);
        put_str(req, "publish", "fmnist@1");
    }
    const aims_status rc = aims_client_call_addr(c, addr, SVC, method, req, rep, 30000);
    aims_msg_destroy(req);
    return rc;
}

/* Fashion-MNIST's first ROWS training rows, scaled to [0, 1], stored once. */
static void put_data(aims_client *c, const char *addr, char *ref, size_t cap)
{
    const char *dir = getenv("AIMS_DATA_DIR");
    char img[512], lab[512];
    snprintf(img, sizeof img, "%s/fashion-mnist/train-images-idx3-ubyte", dir ? dir : ".");
    snprintf(lab, sizeof lab, "%s/fashion-mnist/train-labels-idx1-ubyte", dir ? dir : ".");
    aims_dataset *ds = NULL;
    IT_CHECK(aims_dataset_load_idx(img, lab, NULL, &ds) == AIMS_OK, "load: %s", aims_errmsg());
    float *x = malloc((size_t)ROWS * 784 * sizeof(float));
    IT_CHECK(x != NULL, "malloc");
    const float *f = aims_dataset_features(ds);
    for (size_t i = 0; i < (size_t)ROWS * 784; i++) {
        x[i] = f[i] * (1.0f / 255.0f);
    }
    aims_msg *req = new_msg();
    aims_msg *rep = new_msg();
    const uint64_t xd[2] = {ROWS, 784}, yd = ROWS;
    IT_CHECK(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, x, 0) == AIMS_OK &&
                 aims_msg_add(req, "y", AIMS_DT_I32, &yd, 1, aims_dataset_labels(ds), 0) ==
                     AIMS_OK,
             "rows");
    const aims_status rc = aims_client_call_addr(c, addr, SVC, "put_data", req, rep, 60000);
    IT_CHECK(rc == AIMS_OK, "put_data: %s (%s)", aims_status_name(rc), aims_msg_error(rep));
    get_str(rep, "data", ref, cap);
    IT_CHECK(strncmp(ref, "sha256:", 7) == 0, "data ref %s", ref);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    free(x);
    aims_dataset_destroy(ds);
}

/* Poll status on addr until pred holds (bounded); the last reply stays in rep. */
typedef int (*pred_fn)(const aims_msg *rep, const void *arg);

static void wait_for(aims_client *c, const char *addr, const char *job, aims_msg *rep,
                     pred_fn pred, const void *arg, const char *what)
{
    const uint64_t t0 = it_now_ms();
    for (;;) {
        const aims_status rc = job_call(c, addr, "status", job, NULL, rep);
        if (rc == AIMS_OK && pred(rep, arg)) {
            return;
        }
        IT_CHECK(it_now_ms() - t0 < 120000, "%s: job %s: waited 120 s (%s, %s)", what, job,
                 aims_status_name(rc), aims_msg_error(rep));
        it_sleep_ms(5);
    }
}

static int is_done(const aims_msg *rep, const void *arg)
{
    (void)arg;
    const int64_t s = get_int(rep, "state");
    IT_CHECK(s <= 2, "job failed or was cancelled: state %lld", (long long)s);
    return s == 2;
}

static int step_at_least(const aims_msg *rep, const void *arg)
{
    return get_int(rep, "state") == 1 && get_int(rep, "step") >= *(const int64_t *)arg;
}

/* Running (state 1) on the process whose pid is *arg. */
static int running_on(const aims_msg *rep, const void *arg)
{
    char owner[128], pid[32];
    snprintf(pid, sizeof pid, "/%ld/", (long)*(const pid_t *)arg);
    return get_int(rep, "state") >= 1 && strstr(get_str(rep, "owner", owner, sizeof owner), pid);
}

static void *result_bytes(aims_client *c, const char *addr, const char *job, size_t *len)
{
    aims_msg *rep = new_msg();
    const aims_status rc = job_call(c, addr, "result", job, NULL, rep);
    IT_CHECK(rc == AIMS_OK, "result %s: %s (%s)", job, aims_status_name(rc), aims_msg_error(rep));
    size_t idx = 0;
    const void *p = NULL;
    IT_CHECK(aims_msg_find(rep, "bundle", &idx) == AIMS_OK &&
                 aims_msg_get_tensor(rep, idx, NULL, NULL, NULL, NULL, &p, len) == AIMS_OK,
             "no bundle");
    void *copy = malloc(*len);
    IT_CHECK(copy != NULL, "malloc");
    memcpy(copy, p, *len);
    aims_msg_destroy(rep);
    return copy;
}

/* Files called "result" in the job's store folder. */
static int results_in_store(const char *job)
{
    char path[600];
    int n = snprintf(path, sizeof path, "%s/j/", g_store);
    for (const char *p = job; *p != '\0'; p++) {
        n += snprintf(path + n, sizeof path - (size_t)n, "%02x", (unsigned char)*p);
    }
    DIR *d = opendir(path);
    IT_CHECK(d != NULL, "no store folder %s", path);
    int count = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        count += strcmp(e->d_name, "result") == 0;
    }
    closedir(d);
    return count;
}

static void spawn_trainer(it_proc *p, const char *name)
{
    it_spawnl(p, name, 30000, "--name", name, "--listen", "tcp://127.0.0.1:0", "--train", SVC,
              "--train-store", g_flag, (char *)NULL);
}

/* The zombie's stderr goes to log_path: fd 2 is pointed there while it is spawned. */
static void spawn_logged(it_proc *p, const char *name, const char *log_path)
{
    const int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    IT_CHECK(fd >= 0, "open %s", log_path);
    fflush(stderr);
    const int saved = dup(2);
    IT_CHECK(saved >= 0 && dup2(fd, 2) == 2, "dup2");
    spawn_trainer(p, name);
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
    const char *dd = getenv("AIMS_DATA_DIR");
    char probe[512];
    snprintf(probe, sizeof probe, "%s/fashion-mnist/train-images-idx3-ubyte", dd ? dd : ".");
    if (dd == NULL || access(probe, R_OK) != 0) {
        it_log("skipped: no Fashion-MNIST cache in AIMS_DATA_DIR");
        return 77;
    }
    snprintf(g_store, sizeof g_store, "%s/store", it_dir());
    snprintf(g_flag, sizeof g_flag, "dir:%s?lease_ms=%d&scan_ms=50", g_store, LEASE_MS);
    char log_path[400];
    snprintf(log_path, sizeof log_path, "%s/zombie.log", it_dir());
    it_proc survivor, zombie;
    spawn_trainer(&survivor, "survivor");
    aims_client *c = it_client(NULL, 50);
    char ref[80];
    put_data(c, survivor.addr, ref, sizeof ref);

    /* the uninterrupted run */
    aims_msg *rep = new_msg();
    IT_CHECK(job_call(c, survivor.addr, "submit", "ref", ref, rep) == AIMS_OK, "submit ref: %s",
             aims_msg_error(rep));
    wait_for(c, survivor.addr, "ref", rep, is_done, NULL, "uninterrupted run");
    size_t ref_len = 0;
    void *ref_bytes = result_bytes(c, survivor.addr, "ref", &ref_len);
    it_log("uninterrupted run: %zu result bytes", ref_len);

    /* the job on the zombie-to-be, paused past its lease after a checkpoint */
    spawn_logged(&zombie, "zombie", log_path);
    const char *job = "fence";
    IT_CHECK(job_call(c, zombie.addr, "submit", job, ref, rep) == AIMS_OK, "submit: %s",
             aims_msg_error(rep));
    const int64_t pause_at = CKPT_EVERY + 10;
    wait_for(c, zombie.addr, job, rep, step_at_least, &pause_at, "before the pause");
    IT_CHECK(get_int(rep, "token") == 1, "token %lld before the pause",
             (long long)get_int(rep, "token"));
    it_signal(&zombie, SIGSTOP);
    it_log("SIGSTOP zombie pid %ld at step >= %lld", (long)zombie.pid,
           (long long)get_int(rep, "step"));
    wait_for(c, survivor.addr, job, rep, running_on, &survivor.pid, "adoption");
    IT_CHECK(get_int(rep, "token") == 2, "token %lld after the adoption",
             (long long)get_int(rep, "token"));
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

    wait_for(c, survivor.addr, job, rep, is_done, NULL, "after the pause");
    char owner[160], pid[32];
    snprintf(pid, sizeof pid, "/%ld/", (long)survivor.pid);
    IT_CHECK(strstr(get_str(rep, "owner", owner, sizeof owner), pid) != NULL,
             "finished by %s, not by the survivor", owner);
    IT_CHECK(get_int(rep, "token") == 2 && get_int(rep, "adoptions") == 1,
             "token %lld, adoptions %lld", (long long)get_int(rep, "token"),
             (long long)get_int(rep, "adoptions"));
    /* the zombie, asked directly, does not claim the job: it answers from the store */
    IT_CHECK(job_call(c, zombie.addr, "status", job, NULL, rep) == AIMS_OK, "zombie status: %s",
             aims_msg_error(rep));
    IT_CHECK(get_int(rep, "state") == 2 &&
                 strstr(get_str(rep, "owner", owner, sizeof owner), pid) != NULL,
             "the zombie reports state %lld, owner %s", (long long)get_int(rep, "state"),
             owner);
    size_t len = 0;
    void *got = result_bytes(c, zombie.addr, job, &len);
    IT_CHECK(len == ref_len && memcmp(got, ref_bytes, len) == 0,
             "the fenced job's result differs from the uninterrupted run");
    free(got);
    IT_CHECK(results_in_store(job) == 1, "not exactly one result");
    it_log("one result, equal to the uninterrupted run's %zu bytes", len);

    aims_msg_destroy(rep);
    free(ref_bytes);
    aims_client_destroy(c);
    it_signal(&zombie, SIGTERM);
    it_signal(&survivor, SIGTERM);
    const int st = it_wait_exit(&survivor, 30000);
    IT_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status %d", st);
    (void)it_wait_exit(&zombie, 30000);
    it_pass();
}
