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
 * Skipped (77) without the Fashion-MNIST cache (AIMS_DATA_DIR).
 */
#include <dirent.h>
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

static const char SPEC[] = "kind=mlp hidden=128 activation=relu epochs=4 batch=32 lr=0.05 "
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

int main(int argc, char **argv)
{
    it_init(argc, argv, "jobs_daemon");
    const char *dd = getenv("AIMS_DATA_DIR");
    char probe[512];
    snprintf(probe, sizeof probe, "%s/fashion-mnist/train-images-idx3-ubyte", dd ? dd : ".");
    if (dd == NULL || access(probe, R_OK) != 0) {
        it_log("skipped: no Fashion-MNIST cache in AIMS_DATA_DIR");
        return 77;
    }
    snprintf(g_store, sizeof g_store, "%s/store", it_dir());
    snprintf(g_flag, sizeof g_flag, "dir:%s?lease_ms=%d&scan_ms=50", g_store, LEASE_MS);
    it_proc survivor, victim;
    spawn_trainer(&survivor, "survivor");
    aims_client *c = it_client(NULL, 50);
    char ref[80];
    put_data(c, survivor.addr, ref, sizeof ref);
    it_log("rows stored once as %s", ref);

    /* the uninterrupted run */
    aims_msg *rep = new_msg();
    IT_CHECK(job_call(c, survivor.addr, "submit", "ref", ref, rep) == AIMS_OK, "submit ref: %s",
             aims_msg_error(rep));
    wait_for(c, survivor.addr, "ref", rep, is_done, NULL, "uninterrupted run");
    size_t ref_len = 0;
    void *ref_bytes = result_bytes(c, survivor.addr, "ref", &ref_len);
    it_log("uninterrupted run: %zu result bytes", ref_len);

    const int64_t kill_at[3] = {60, 200, 330}; /* steps (188 per epoch): epochs 1, 2, 2 */
    for (int k = 0; k < 3; k++) {
        char job[32], name[32];
        snprintf(job, sizeof job, "kill-%d", k);
        snprintf(name, sizeof name, "victim%d", k);
        spawn_trainer(&victim, name);
        const aims_status rc = job_call(c, victim.addr, "submit", job, ref, rep);
        IT_CHECK(rc == AIMS_OK, "submit %s: %s (%s)", job, aims_status_name(rc),
                 aims_msg_error(rep));
        wait_for(c, victim.addr, job, rep, step_at_least, &kill_at[k], "before the kill");
        const int64_t seen = get_int(rep, "step");
        it_signal(&victim, SIGKILL);
        const uint64_t t_kill = it_now_ms();
        (void)it_wait_exit(&victim, 10000);
        wait_for(c, survivor.addr, job, rep, running_on, &survivor.pid, "adoption");
        const uint64_t t_run = it_now_ms();
        wait_for(c, survivor.addr, job, rep, is_done, NULL, "after the kill");
        const int64_t resumed = get_int(rep, "resumed_from");
        const int64_t lost = get_int(rep, "lost_steps");
        const int64_t every = get_int(rep, "ckpt_every");
        it_log("%s: killed at step >= %lld, resumed from %lld, lost %lld steps (interval %lld); "
               "P14b kill -> running elsewhere %llu ms (lease %d ms, renewed every %d ms)",
               job, (long long)seen, (long long)resumed, (long long)lost, (long long)every,
               (unsigned long long)(t_run - t_kill), LEASE_MS, LEASE_MS / 3);
        IT_CHECK(get_int(rep, "adoptions") == 1, "adoptions %lld",
                 (long long)get_int(rep, "adoptions"));
        IT_CHECK(resumed >= seen, "resumed from %lld, the victim had checkpointed step %lld",
                 (long long)resumed, (long long)seen);
        IT_CHECK(every == CKPT_EVERY && lost >= 0 && lost <= CKPT_EVERY,
                 "lost %lld steps, more than one interval (%lld)", (long long)lost,
                 (long long)every);
        size_t len = 0;
        void *got = result_bytes(c, survivor.addr, job, &len);
        IT_CHECK(len == ref_len && memcmp(got, ref_bytes, len) == 0,
                 "%s: the resumed result differs from the uninterrupted run", job);
        free(got);
        IT_CHECK(results_in_store(job) == 1, "%s: not exactly one result", job);
    }
    aims_msg_destroy(rep);
    free(ref_bytes);
    aims_client_destroy(c);
    it_signal(&survivor, SIGTERM);
    const int st = it_wait_exit(&survivor, 30000);
    IT_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status %d", st);
    it_pass();
}
