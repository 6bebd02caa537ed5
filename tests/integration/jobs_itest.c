/*
 * jobs_itest.c -- the durable-job integration rig (see jobs_itest.h).
 *
 * Moved out of test_jobs_daemon.c and test_fence_daemon.c, which held the
 * same ~180 lines each: the message helpers, the job calls, the bounded
 * status poll with its predicates, the result and store checks, and the
 * start of main (data probe, survivor, stored rows, uninterrupted run).
 * State is file-static (one rig per test program): the store folder, the
 * --train-store flag and the spec every submit carries.
 */
#include "jobs_itest.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_store[300];
static char g_flag[400];
static const char *g_spec = "";

aims_msg *jobs_msg(void)
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

int64_t jobs_int(const aims_msg *m, const char *name)
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

const char *jobs_str(const aims_msg *m, const char *name, char *buf, size_t cap)
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

aims_status jobs_call(aims_client *c, const char *addr, const char *method, const char *job,
                      const char *data_ref, aims_msg *rep)
{
    aims_msg *req = jobs_msg();
    put_str(req, "job", job);
    char handle[80];
    snprintf(handle, sizeof handle, "handle-of-%s-0123456789", job);
    put_str(req, "handle", handle);
    if (data_ref != NULL) {
        put_str(req, "data", data_ref);
        put_str(req, "spec", g_spec);
        put_str(req, "publish", "fmnist@1");
    }
    const aims_status rc = aims_client_call_addr(c, addr, JOBS_SVC, method, req, rep, 30000);
    aims_msg_destroy(req);
    return rc;
}

/* Fashion-MNIST's first JOBS_ROWS training rows, scaled to [0, 1], stored once. */
static void put_data(aims_client *c, const char *addr, char *ref, size_t cap)
{
    const char *dir = getenv("AIMS_DATA_DIR");
    char img[512], lab[512];
    snprintf(img, sizeof img, "%s/fashion-mnist/train-images-idx3-ubyte", dir ? dir : ".");
    snprintf(lab, sizeof lab, "%s/fashion-mnist/train-labels-idx1-ubyte", dir ? dir : ".");
    aims_dataset *ds = NULL;
    IT_CHECK(aims_dataset_load_idx(img, lab, NULL, &ds) == AIMS_OK, "load: %s", aims_errmsg());
    float *x = malloc((size_t)JOBS_ROWS * 784 * sizeof(float));
    IT_CHECK(x != NULL, "malloc");
    const float *f = aims_dataset_features(ds);
    for (size_t i = 0; i < (size_t)JOBS_ROWS * 784; i++) {
        x[i] = f[i] * (1.0f / 255.0f);
    }
    aims_msg *req = jobs_msg();
    aims_msg *rep = jobs_msg();
    const uint64_t xd[2] = {JOBS_ROWS, 784}, yd = JOBS_ROWS;
    IT_CHECK(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, x, 0) == AIMS_OK &&
                 aims_msg_add(req, "y", AIMS_DT_I32, &yd, 1, aims_dataset_labels(ds), 0) ==
                     AIMS_OK,
             "rows");
    const aims_status rc = aims_client_call_addr(c, addr, JOBS_SVC, "put_data", req, rep, 60000);
    IT_CHECK(rc == AIMS_OK, "put_data: %s (%s)", aims_status_name(rc), aims_msg_error(rep));
    jobs_str(rep, "data", ref, cap);
    IT_CHECK(strncmp(ref, "sha256:", 7) == 0, "data ref %s", ref);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    free(x);
    aims_dataset_destroy(ds);
}

void jobs_wait(aims_client *c, const char *addr, const char *job, aims_msg *rep, jobs_pred pred,
               const void *arg, const char *what)
{
    const uint64_t t0 = it_now_ms();
    for (;;) {
        const aims_status rc = jobs_call(c, addr, "status", job, NULL, rep);
        if (rc == AIMS_OK && pred(rep, arg)) {
            return;
        }
        IT_CHECK(it_now_ms() - t0 < 120000, "%s: job %s: waited 120 s (%s, %s)", what, job,
                 aims_status_name(rc), aims_msg_error(rep));
        it_sleep_ms(5);
    }
}

int jobs_is_done(const aims_msg *rep, const void *arg)
{
    (void)arg;
    const int64_t s = jobs_int(rep, "state");
    IT_CHECK(s <= 2, "job failed or was cancelled: state %lld", (long long)s);
    return s == 2;
}

int jobs_step_at_least(const aims_msg *rep, const void *arg)
{
    return jobs_int(rep, "state") == 1 && jobs_int(rep, "step") >= *(const int64_t *)arg;
}

/* Running (state 1) on the process whose pid is *arg. */
int jobs_running_on(const aims_msg *rep, const void *arg)
{
    char owner[128], pid[32];
    snprintf(pid, sizeof pid, "/%ld/", (long)*(const pid_t *)arg);
    return jobs_int(rep, "state") >= 1 &&
           strstr(jobs_str(rep, "owner", owner, sizeof owner), pid);
}

void *jobs_result(aims_client *c, const char *addr, const char *job, size_t *len)
{
    aims_msg *rep = jobs_msg();
    const aims_status rc = jobs_call(c, addr, "result", job, NULL, rep);
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

int jobs_results_in_store(const char *job)
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

void jobs_spawn_trainer(it_proc *p, const char *name)
{
    it_spawnl(p, name, 30000, "--name", name, "--listen", "tcp://127.0.0.1:0", "--train",
              JOBS_SVC, "--train-store", g_flag, (char *)NULL);
}

int jobs_rig_start(jobs_rig *r, const char *spec)
{
    const char *dd = getenv("AIMS_DATA_DIR");
    char probe[512];
    snprintf(probe, sizeof probe, "%s/fashion-mnist/train-images-idx3-ubyte", dd ? dd : ".");
    if (dd == NULL || access(probe, R_OK) != 0) {
        it_log("skipped: no Fashion-MNIST cache in AIMS_DATA_DIR");
        return 0;
    }
    memset(r, 0, sizeof *r);
    g_spec = spec;
    snprintf(g_store, sizeof g_store, "%s/store", it_dir());
    snprintf(g_flag, sizeof g_flag, "dir:%s?lease_ms=%d&scan_ms=50", g_store, JOBS_LEASE_MS);
    jobs_spawn_trainer(&r->survivor, "survivor");
    r->c = it_client(NULL, 50);
    put_data(r->c, r->survivor.addr, r->ref, sizeof r->ref);
    it_log("rows stored once as %s", r->ref);

    /* the uninterrupted run */
    r->rep = jobs_msg();
    IT_CHECK(jobs_call(r->c, r->survivor.addr, "submit", "ref", r->ref, r->rep) == AIMS_OK,
             "submit ref: %s", aims_msg_error(r->rep));
    jobs_wait(r->c, r->survivor.addr, "ref", r->rep, jobs_is_done, NULL, "uninterrupted run");
    r->ref_bytes = jobs_result(r->c, r->survivor.addr, "ref", &r->ref_len);
    it_log("uninterrupted run: %zu result bytes", r->ref_len);
    return 1;
}

void jobs_rig_stop(jobs_rig *r)
{
    aims_msg_destroy(r->rep);
    free(r->ref_bytes);
    aims_client_destroy(r->c);
    it_signal(&r->survivor, SIGTERM);
    const int st = it_wait_exit(&r->survivor, 30000);
    IT_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status %d", st);
}
