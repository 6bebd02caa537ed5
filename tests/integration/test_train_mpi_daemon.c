/*
 * test_train_mpi_daemon.c -- `mpirun -np 2 aims_node --train-mpi` as a train
 * service (docs/MPI.md "As a train service"; aims_train_mpi.h).
 *
 *   test_train_mpi_daemon PATH/TO/aims_node mpi|nompi
 *
 * With MPI: mpirun (Open MPI on loopback: shared memory, no ssh, waiting ranks
 * yield; the same settings as tests/integration/mpi_env.py) starts two
 * aims_node processes with --train-mpi --train trainer --train-store DIR
 * --echo pid on tcp://127.0.0.1:0. Rank 0 prints "ready"; rank 1 follows.
 * A client submits over tcp:// (rows shipped in the submit):
 *   1. job "a": trains to the end; its result's model is byte-identical to
 *      this process training the same spec on the same rows with
 *      aims_trainer_set_shards(t, 2) (the one-process reference of 2 ranks);
 *   2. job "b" (many epochs): cancelled on rank 0 while running; it ends
 *      "cancelled" -- and the follower must have stopped at the same step,
 *      or job "c" could not run:
 *   3. job "c" (the spec of "a"): done, the same bytes as "a" (the follower
 *      loop went back to waiting and stayed in step with rank 0);
 *   4. SIGTERM to rank 0 (its pid from the echo service): rank 0 drains,
 *      tells the follower to stop, and mpirun -- hence both ranks -- exits 0
 *      within 60 s.
 * Rows: Fashion-MNIST's first ROWS training images (scaled to [0, 1]) from
 * AIMS_DATA_DIR, or seeded synthetic rows when the cache is missing.
 *
 * A third argument "nostore" runs the same without --train-store (jobs in
 * rank 0's memory, no checkpoints).
 *
 * Without MPI ("nompi"): `aims_node --train-mpi ...` must exit 1 at start
 * (the message says "built without MPI"); then exit 77 (skipped).
 *
 * Bounded: every wait is a polled deadline; itest's watchdog and cleanup
 * kill mpirun, and the ranks die with it (node_mpi.c sets their parent-death
 * signal).
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <aims/aims.h>

#include "itest.h"
#include "jobs_itest.h"

#define ROWS 1200
#define COLS 784
#define CLASSES 10
#define SPEC_A "kind=mlp hidden=32 activation=relu epochs=2 batch=50 lr=0.05 seed=11 " \
               "train_threads=1"
#define SPEC_B "kind=mlp hidden=32 activation=relu epochs=400 batch=50 lr=0.05 seed=12 " \
               "train_threads=1 checkpoint_every_ms=0"

static float g_x[(size_t)ROWS * COLS];
static int32_t g_y[ROWS];

/* Fashion-MNIST's first rows, or a seeded stand-in with some structure. */
static void load_rows(void)
{
    const char *dir = getenv("AIMS_DATA_DIR");
    char img[512], lab[512];
    snprintf(img, sizeof img, "%s/fashion-mnist/train-images-idx3-ubyte", dir ? dir : ".");
    snprintf(lab, sizeof lab, "%s/fashion-mnist/train-labels-idx1-ubyte", dir ? dir : ".");
    aims_dataset *ds = NULL;
    if (access(img, R_OK) == 0 && aims_dataset_load_idx(img, lab, NULL, &ds) == AIMS_OK &&
        aims_dataset_rows(ds) >= ROWS && aims_dataset_cols(ds) == COLS) {
        const float *f = aims_dataset_features(ds);
        for (size_t i = 0; i < (size_t)ROWS * COLS; i++) {
            g_x[i] = f[i] * (1.0f / 255.0f);
        }
        memcpy(g_y, aims_dataset_labels(ds), sizeof g_y);
        aims_dataset_destroy(ds);
        it_log("rows: Fashion-MNIST, first %d", ROWS);
        return;
    }
    aims_dataset_destroy(ds);
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (size_t r = 0; r < ROWS; r++) {
        g_y[r] = (int32_t)(r % CLASSES);
        for (size_t c = 0; c < COLS; c++) {
            s = s * 6364136223846793005u + 1442695040888963407u;
            const float noise = (float)(s >> 40) / (float)(1u << 24);
            g_x[r * COLS + c] = noise * 0.5f + (c % CLASSES == (size_t)g_y[r] ? 0.5f : 0.0f);
        }
    }
    it_log("rows: no Fashion-MNIST cache, %d synthetic rows", ROWS);
}

static void put_str(aims_msg *m, const char *name, const char *s)
{
    const uint64_t n = strlen(s);
    IT_CHECK(aims_msg_add(m, name, AIMS_DT_BYTES, &n, 1, s, 0) == AIMS_OK, "add %s", name);
}

/* One call of the train service for job (spec != NULL: a submit with the rows). */
static aims_status job_call(aims_client *c, const char *addr, const char *method,
                            const char *job, const char *spec, aims_msg *rep)
{
    aims_msg *req = jobs_msg();
    put_str(req, "job", job);
    char handle[80];
    snprintf(handle, sizeof handle, "handle-of-%s-0123456789", job);
    put_str(req, "handle", handle);
    if (spec != NULL) {
        const uint64_t xd[2] = {ROWS, COLS}, yd = ROWS;
        put_str(req, "spec", spec);
        IT_CHECK(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, g_x, 0) == AIMS_OK &&
                     aims_msg_add(req, "y", AIMS_DT_I32, &yd, 1, g_y, 0) == AIMS_OK,
                 "rows");
    }
    const aims_status rc = aims_client_call_addr(c, addr, "trainer", method, req, rep, 60000);
    aims_msg_destroy(req);
    return rc;
}

/* Poll status until the state is >= want_state (and, for running, the
 * epoch >= min_epoch); returns the state. At most 180 s. */
static int wait_state(aims_client *c, const char *addr, const char *job, int want_state,
                      int min_epoch)
{
    aims_msg *rep = jobs_msg();
    const uint64_t t0 = it_now_ms();
    int state = -1;
    for (;;) {
        const aims_status rc = job_call(c, addr, "status", job, NULL, rep);
        IT_CHECK(rc == AIMS_OK, "status %s: %s (%s)", job, aims_status_name(rc),
                 aims_msg_error(rep));
        state = (int)jobs_int(rep, "state");
        const int epoch = (int)jobs_int(rep, "epoch");
        if (state > 1 || (state >= want_state && epoch >= min_epoch)) {
            break;
        }
        IT_CHECK(it_now_ms() - t0 < 180000, "job %s: state %d epoch %d after 180 s", job, state,
                 epoch);
        it_sleep_ms(20);
    }
    if (state == 3) {
        char err[300];
        it_fail("job %s failed: %s", job, jobs_str(rep, "error", err, sizeof err));
    }
    aims_msg_destroy(rep);
    return state;
}

/* The job's result bundle -> its model saved to path. */
static void result_model(aims_client *c, const char *addr, const char *job, const char *path)
{
    aims_msg *rep = jobs_msg();
    const aims_status rc = job_call(c, addr, "result", job, NULL, rep);
    IT_CHECK(rc == AIMS_OK, "result %s: %s (%s)", job, aims_status_name(rc), aims_msg_error(rep));
    size_t idx = 0;
    const void *p = NULL;
    size_t len = 0;
    IT_CHECK(aims_msg_find(rep, "bundle", &idx) == AIMS_OK &&
                 aims_msg_get_tensor(rep, idx, NULL, NULL, NULL, NULL, &p, &len) == AIMS_OK,
             "no bundle");
    aims_bundle *b = NULL;
    IT_CHECK(aims_bundle_parse(p, len, &b) == AIMS_OK, "bundle: %s", aims_errmsg());
    IT_CHECK(aims_model_save(aims_bundle_model(b), path) == AIMS_OK, "save: %s", aims_errmsg());
    aims_bundle_destroy(b);
    aims_msg_destroy(rep);
}

/* SPEC_A trained here on one process with 2 shards: the reference of 2 ranks. */
static void reference_model(const char *path)
{
    aims_dataset *ds = NULL;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    IT_CHECK(aims_dataset_create_dense(ROWS, COLS, g_x, g_y, &ds) == AIMS_OK, "dataset");
    IT_CHECK(aims_model_create(AIMS_MODEL_KIND_MLP, COLS, CLASSES, &m) == AIMS_OK &&
                 aims_model_add_dense(m, 32, AIMS_ACT_RELU) == AIMS_OK &&
                 aims_trainer_create(m, &t) == AIMS_OK,
             "model: %s", aims_errmsg());
    IT_CHECK(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 2) == AIMS_OK &&
                 aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 50) == AIMS_OK &&
                 aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, 0.05) == AIMS_OK &&
                 aims_trainer_set_param_i64(t, AIMS_TRAIN_SEED, 11) == AIMS_OK &&
                 aims_trainer_set_param_i64(t, AIMS_TRAIN_THREADS, 1) == AIMS_OK &&
                 aims_trainer_set_shards(t, 2) == AIMS_OK,
             "trainer: %s", aims_errmsg());
    IT_CHECK(aims_trainer_fit(t, ds, NULL) == AIMS_OK, "fit: %s", aims_errmsg());
    IT_CHECK(aims_model_save(m, path) == AIMS_OK, "save: %s", aims_errmsg());
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(ds);
}

static void same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb");
    FILE *fb = fopen(b, "rb");
    IT_CHECK(fa != NULL && fb != NULL, "open %s / %s", a, b);
    long n = 0;
    for (;; n++) {
        const int ca = fgetc(fa);
        const int cb = fgetc(fb);
        IT_CHECK(ca == cb, "%s and %s differ at byte %ld", a, b, n);
        if (ca == EOF) {
            break;
        }
    }
    fclose(fa);
    fclose(fb);
    it_log("%s == %s (%ld bytes)", a, b, n);
}

/* Rank 0's pid: the echo service answers with its process id. */
static pid_t rank0_pid(aims_client *c, const char *addr)
{
    aims_msg *req = jobs_msg();
    aims_msg *rep = jobs_msg();
    put_str(req, "x", "who");
    const aims_status rc = aims_client_call_addr(c, addr, "pid", "echo", req, rep, 10000);
    IT_CHECK(rc == AIMS_OK, "echo: %s", aims_status_name(rc));
    const pid_t pid = (pid_t)jobs_int(rep, "pid");
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return pid;
}

/* Under ASan: Open MPI keeps some start-up memory until exit (not libaims':
 * the daemon's own is freed); as tests/integration/mpi_check.py does, keep its
 * plug-ins loaded and unwind slowly so these suppressions name them. */
static void lsan_env(void)
{
    static const char supp[] = "leak:libmpi.so\nleak:libopen-pal.so\nleak:libopen-rte.so\n"
                               "leak:libhwloc.so\nleak:libevent\nleak:libpmix.so\nleak:mca_\n"
                               "leak:libucs.so\nleak:libucp.so\nleak:libuct.so\n"
                               "leak:libfabric.so\n";
    char path[400], opt[1200];
    snprintf(path, sizeof path, "%s/lsan.supp", it_dir());
    FILE *f = fopen(path, "w");
    IT_CHECK(f != NULL && fputs(supp, f) >= 0 && fclose(f) == 0, "write %s", path);
    const char *lsan = getenv("LSAN_OPTIONS");
    snprintf(opt, sizeof opt, "%s%ssuppressions=%s", lsan ? lsan : "", lsan ? ":" : "", path);
    setenv("LSAN_OPTIONS", opt, 1);
    const char *asan = getenv("ASAN_OPTIONS");
    snprintf(opt, sizeof opt, "%s%sfast_unwind_on_malloc=0", asan ? asan : "", asan ? ":" : "");
    setenv("ASAN_OPTIONS", opt, 1);
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
}

/* Open MPI on one host, as tests/integration/mpi_env.py sets it. */
static void mpi_env(void)
{
    lsan_env();
    static const char *const kv[][2] = {
        {"OMPI_MCA_btl", "self,vader"},
        {"OMPI_MCA_pml", "ob1"},
        {"OMPI_MCA_osc", "^ucx"},
        {"OMPI_MCA_btl_vader_single_copy_mechanism", "none"},
        {"OMPI_MCA_plm_rsh_agent", ""},
        {"OMPI_MCA_rmaps_base_oversubscribe", "1"},
        {"OMPI_MCA_hwloc_base_binding_policy", "none"},
        {"OMPI_MCA_mpi_yield_when_idle", "1"},
        {"OMPI_ALLOW_RUN_AS_ROOT", "1"},
        {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
        {"OPENBLAS_NUM_THREADS", "1"},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        setenv(kv[i][0], kv[i][1], 1);
    }
}

static const char *find_mpirun(void)
{
    static const char *const where[] = {"/usr/bin/mpirun", "/usr/local/bin/mpirun"};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        if (access(where[i], X_OK) == 0) {
            return where[i];
        }
    }
    return NULL;
}

/* Built without MPI: --train-mpi must refuse at start (exit 1). */
static int no_mpi(int argc, char **argv)
{
    it_init(argc, argv, "test_train_mpi_daemon");
    const char *args[] = {"--name", "m", "--listen", "tcp://127.0.0.1:0", "--train", "trainer",
                          "--train-mpi", NULL};
    const int st = it_run(args, 30000);
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "--train-mpi without MPI: status %d", st);
    it_log("built without MPI: --train-mpi refused at start (exit 1); skipped");
    return 77;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--itest-exec") == 0) {
        it_init(argc, argv, "test_train_mpi_daemon"); /* the trampoline: does not return */
    }
    if (argc != 3 && !(argc == 4 && strcmp(argv[3], "nostore") == 0)) {
        fprintf(stderr, "usage: %s PATH/TO/aims_node mpi|nompi [nostore]\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[2], "mpi") != 0) {
        return no_mpi(2, argv);
    }
    const char *mpirun = find_mpirun();
    if (mpirun == NULL) {
        fprintf(stderr, "FAIL: built with MPI but no mpirun (apt-get install openmpi-bin)\n");
        return 1;
    }
    /* itest spawns its "daemon" through a trampoline: here that is mpirun,
     * and aims_node is mpirun's program */
    static char node[4096];
    snprintf(node, sizeof node, "%s", argv[1]);
    char *fake[] = {argv[0], (char *)(uintptr_t)mpirun, NULL};
    it_init(2, fake, "test_train_mpi_daemon");
    mpi_env();
    load_rows();
    char store[400], ref_path[400], a_path[400], c_path[400];
    snprintf(store, sizeof store, "dir:%s/store", it_dir());
    snprintf(ref_path, sizeof ref_path, "%s/ref.aimsm", it_dir());
    snprintf(a_path, sizeof a_path, "%s/a.aimsm", it_dir());
    snprintf(c_path, sizeof c_path, "%s/c.aimsm", it_dir());
    reference_model(ref_path);

    it_proc mpi;
    /* durable jobs (checkpoints on rank 0) by default; "nostore": in-memory jobs */
    const char *args[] = {"--oversubscribe", "--allow-run-as-root", "-np", "2", node,
                          "--name", "mpitrain", "--listen", "tcp://127.0.0.1:0", "--train",
                          "trainer", "--train-mpi", "--echo", "pid", "--train-store", store,
                          NULL};
    if (argc == 4) {
        args[sizeof args / sizeof args[0] - 3] = NULL; /* no --train-store */
    }
    it_spawn(&mpi, "mpirun", args, 120000);
    aims_client *c = it_client(NULL, 50);
    const pid_t r0 = rank0_pid(c, mpi.addr);
    it_log("rank 0 is pid %ld (mpirun %ld)", (long)r0, (long)mpi.pid);
    aims_msg *rep = jobs_msg();

    /* 1. a job on both ranks == one process with 2 shards */
    aims_status rc = job_call(c, mpi.addr, "submit", "a", SPEC_A, rep);
    IT_CHECK(rc == AIMS_OK, "submit a: %s (%s)", aims_status_name(rc), aims_msg_error(rep));
    IT_CHECK(wait_state(c, mpi.addr, "a", 2, 0) == 2, "job a not done");
    result_model(c, mpi.addr, "a", a_path);
    same_file(ref_path, a_path);

    /* 2. a cancel on rank 0 stops every rank */
    rc = job_call(c, mpi.addr, "submit", "b", SPEC_B, rep);
    IT_CHECK(rc == AIMS_OK, "submit b: %s (%s)", aims_status_name(rc), aims_msg_error(rep));
    IT_CHECK(wait_state(c, mpi.addr, "b", 1, 1) == 1, "job b ended before its cancel");
    rc = job_call(c, mpi.addr, "cancel", "b", NULL, rep);
    IT_CHECK(rc == AIMS_OK, "cancel b: %s (%s)", aims_status_name(rc), aims_msg_error(rep));
    IT_CHECK(wait_state(c, mpi.addr, "b", 2, 0) == 4, "job b not cancelled");
    it_log("job b cancelled on every rank");

    /* 3. the follower waits for the next job and stays in step */
    rc = job_call(c, mpi.addr, "submit", "c", SPEC_A, rep);
    IT_CHECK(rc == AIMS_OK, "submit c: %s (%s)", aims_status_name(rc), aims_msg_error(rep));
    IT_CHECK(wait_state(c, mpi.addr, "c", 2, 0) == 2, "job c not done");
    result_model(c, mpi.addr, "c", c_path);
    same_file(ref_path, c_path);

    /* 4. rank 0 stops: it drains, stops the follower, everything exits 0 */
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    IT_CHECK(kill(r0, SIGTERM) == 0, "kill rank 0");
    const int st = it_wait_exit(&mpi, 60000);
    IT_CHECK(st != -1, "mpirun still running 60 s after SIGTERM to rank 0");
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "mpirun exit status %d", st);
    it_log("rank 0 stopped: both ranks and mpirun exited 0");
    it_pass();
}
