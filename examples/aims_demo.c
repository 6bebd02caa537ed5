/*
 * aims_demo.c -- the libaims main job: the seed article's example, for real.
 *
 * One host program runs a small cluster of services and drives a model from
 * raw data to served predictions through them:
 *
 *   hub        a node hosting the registry ("aims.registry")
 *   pre        preprocess service "preprocess.fmnist" (scale 1/255, standardize)
 *   train      train service "train.fmnist" (jobs with ids, progress, results)
 *   infer-a/b  two replicas of "infer.fmnist@1" behind the client's balancer
 *
 *   1. load Fashion-MNIST; fit the pipeline (here: the host owns the data);
 *   2. transform the training set THROUGH the preprocess service (chunks);
 *   3. submit the training job to the train service, draw its progress, fetch
 *      the trained model, bundle it with the pipeline and publish it as
 *      infer.fmnist@1 on two infer replicas;
 *   4. serve the whole raw test set through the client (balanced, batched on
 *      the server side) -> accuracy, latency percentiles, throughput;
 *   5. the seed's three metrics: load-balance degree (replica utilisation:
 *      average / maximum busy time), parallelism (capacity of 2 replicas /
 *      capacity of 1: each replica is one worker thread, the load one client
 *      thread with 64-row async calls in flight, so the generator does not
 *      take the replicas' cores) and autonomy degree (a rolling restart of
 *      each replica under load: independent when no call failed and p99
 *      stayed within bound);
 *   6. the model lifecycle (demo_lifecycle.c, issue 16): the optimize
 *      service optimize.fmnist quantizes the published fp32 bundle to int8
 *      within an accuracy bound (accuracy, size, latency of both), and the
 *      int8 version is deployed to infer.fmnist as a 20 % canary under the
 *      demo's own load until the rule promotes it (zero failed calls). With
 *      --processes, step 3 runs on two train nodes sharing a checkpoint
 *      store: the node running the job is killed with SIGKILL mid-job and the
 *      other resumes it (resumed_from / lost_steps from the job's record);
 *   7. the HTTP front door (KServe v2) on infer-a, on a loopback port: its URL
 *      printed, then checked with plain HTTP (demo_http.c): readiness, one
 *      JSON infer whose class must equal the native client's for the same
 *      row, and the Prometheus scrape;
 *   8. one JSON summary line.
 *
 * In-process (default) every node lives in this process and talks inproc://.
 * With --processes each node is a separate `aims_node` process (next to this
 * binary) on tls:// -- mutual TLS 1.3 with a throw-away CA made at start by
 * the openssl CLI, every node enforcing one policy (demo_tls.c), the HTTP
 * front door on HTTPS -- or, with --plain (or a library built without TLS),
 * on tcp:// and ipc://; the calls in this file are the same.
 * With --etcd (implies --processes, on tcp:// + ipc://) there is no hub:
 * deploy/local.sh starts the 3-member etcd cluster of the deploy topology on
 * free loopback ports and every node and the client join it (etcd://); the
 * model version is published exactly once through it
 * (aims_client_publish_version).
 *
 * Usage: aims_demo [--data DIR] [--processes [--plain]] [--etcd] [--epochs N] [--threads N]
 * Exit codes: 0 ok, 1 failure, 2 usage, 77 input data missing.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <aims/aims.h>

#include "demo_http.h"
#include "demo_lifecycle.h"
#include "demo_tls.h"

extern char **environ;

#define CHECK(call)                                                                        \
    do {                                                                                   \
        const aims_status rc_ = (call);                                                    \
        if (rc_ != AIMS_OK) {                                                              \
            fprintf(stderr, "aims_demo: %s failed: %s: %s\n", #call, aims_strerror(rc_),   \
                    aims_errmsg());                                                        \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

enum { N_REPLICAS = 2, CHUNK = 2000, WINDOW = 32, MAX_LAT = 200000 };

typedef struct opts {
    const char *data_dir;
    int processes;
    int etcd;
    int plain; /* --plain: --processes on tcp:// + ipc:// instead of tls:// */
    int epochs;
    int threads;
} opts;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the cluster: nodes in this process, or child processes ----------------- */

typedef struct member {
    const char *name;
    aims_node *node;       /* in-process */
    aims_service *service; /* in-process */
    pid_t pid;             /* --processes */
    char addr[256];        /* --processes: the address it reported */
    int http;              /* --processes: started with --http, reports its URL */
} member;

typedef struct cluster {
    int processes;
    int etcd;              /* --etcd: hub_url is etcd://, started by deploy/local.sh */
    char local_sh[PATH_MAX + 256]; /* deploy/local.sh, with its environment */
    int tls;               /* --processes over tls:// (demo_tls.c) */
    demo_tls pki;          /* its CA, certificates and policy */
    char dir[64];          /* temp dir: sockets, pipeline, bundle */
    char exe[PATH_MAX];    /* aims_node next to this program */
    char hub_url[256];
    aims_registry *reg;    /* in-process hub's registry */
    int http_on;           /* libaims has the HTTP front door (step 7) */
    aims_http *http;       /* in-process: the front door on infer-a's node */
    char http_url[128];    /* its URL (either mode) */
    member hub, pre, train, infer[N_REPLICAS];
    member train2;         /* --processes: a second train node on the same store */
    char infer_policy[PATH_MAX]; /* --processes without TLS: demo_life_plain_policy */
    demo_life life;        /* lifecycle steps (demo_lifecycle.c) */
} cluster;

/* Over tls:// every listener is tls://127.0.0.1:0 and every node gets the
 * PKI and the policy: args copied into big with those flags appended. */
static char *const *tls_args(const cluster *c, char *const args[], char *big[], size_t cap)
{
    static char k_tls_listen[] = "tls://127.0.0.1:0";
    size_t n = 0;
    for (; args[n] != NULL && n + 12 < cap; n++) {
        big[n] = n > 0 && strcmp(args[n - 1], "--listen") == 0 ? k_tls_listen : args[n];
    }
    char *const extra[] = {"--tls-ca", (char *)c->pki.ca, "--tls-cert", (char *)c->pki.node_cert,
                           "--tls-key", (char *)c->pki.node_key, "--policy",
                           (char *)c->pki.policy};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        big[n++] = extra[i];
    }
    big[n] = NULL;
    return big;
}

/* Start `aims_node` with args and wait for its "ready <address>" line. */
static int spawn_node(cluster *c, member *m, char *const args[], char *addr, size_t cap)
{
    char *big[48];
    if (c->tls) {
        args = tls_args(c, args, big, sizeof big / sizeof big[0]);
    }
    int fds[2];
    if (pipe(fds) != 0) {
        return 1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    const int rc = posix_spawn(&m->pid, c->exe, &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        fprintf(stderr, "aims_demo: cannot start %s: %s\n", c->exe, strerror(rc));
        return 1;
    }
    FILE *f = fdopen(fds[0], "r");
    char line[512] = "";
    const int ok = f != NULL && fgets(line, sizeof line, f) != NULL &&
                   strncmp(line, "ready ", 6) == 0;
    char hline[256] = "";
    if (ok && m->http && (fgets(hline, sizeof hline, f) == NULL ||
                          strncmp(hline, "http ", 5) != 0 ||
                          strlen(hline + 5) >= sizeof c->http_url)) {
        fprintf(stderr, "aims_demo: node %s did not report its HTTP URL\n", m->name);
        fclose(f);
        return 1;
    }
    if (m->http) {
        hline[strcspn(hline, "\r\n")] = 0;
        memcpy(c->http_url, hline + 5, strlen(hline + 5) + 1);
    }
    if (f != NULL) {
        fclose(f);
    }
    if (!ok) {
        fprintf(stderr, "aims_demo: node %s did not start\n", m->name);
        return 1;
    }
    line[strcspn(line, "\r\n")] = 0;
    if (strlen(line + 6) >= cap) {
        fprintf(stderr, "aims_demo: node %s address too long\n", m->name);
        return 1;
    }
    memcpy(addr, line + 6, strlen(line + 6) + 1);
    return 0;
}

static void stop_process(member *m)
{
    if (m->pid > 0) {
        kill(m->pid, SIGTERM);
        waitpid(m->pid, NULL, 0);
        m->pid = 0;
    }
}

/* A node in this process, joined to the hub. */
static int local_node(cluster *c, member *m, const char *url)
{
    CHECK(aims_node_create(m->name, &m->node));
    CHECK(aims_node_set_param_i64(m->node, AIMS_NODE_HEARTBEAT_MS, 200));
    CHECK(aims_node_listen(m->node, url));
    CHECK(aims_node_join(m->node, c->hub_url));
    return 0;
}

/* 1 when nothing holds 127.0.0.1:port right now (a bind succeeds). */
static int port_free(int port)
{
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* An even base port whose next 6 ports (3 etcd members: client + peer) are free,
 * drawn from 20000-32003: below Linux's ephemeral range (32768 up), where any
 * outgoing connection of a parallel test could take a probed port before
 * etcd binds it (deploy_check draws its ports the same way). */
static int free_port_base(void)
{
    for (unsigned k = 0; k < 200; k++) {
        const int base = 20000 + (int)((((unsigned)getpid() * 7919u + k * 97u) % 12000u) & ~1u);
        int ok = 1;
        for (int p = base; ok && p < base + 6; p++) {
            ok = port_free(p);
        }
        if (ok) {
            return base;
        }
    }
    return 23790;
}

/* --etcd: deploy/local.sh starts the topology's etcd members; their URL is
 * the demo's registry. */
static int start_etcd(cluster *c)
{
    const char *src = getenv("AIMS_SOURCE_DIR");
    char script[PATH_MAX];
    if (src != NULL) {
        snprintf(script, sizeof script, "%s/deploy/local.sh", src);
    } else {
        /* build/examples/aims_node -> deploy/local.sh of the source tree */
        snprintf(script, sizeof script, "%s", c->exe);
        char *slash = strrchr(script, '/');
        if (slash != NULL) {
            *slash = 0;
        }
        strncat(script, "/../../deploy/local.sh", sizeof script - strlen(script) - 1);
    }
    if (access(script, R_OK) != 0) {
        snprintf(script, sizeof script, "deploy/local.sh");
    }
    snprintf(c->local_sh, sizeof c->local_sh, "AIMS_LOCAL_DIR='%s/etcd' ETCD_BASE_PORT=%d sh '%s'",
             c->dir, free_port_base(), script);
    char cmd[sizeof c->local_sh + 16];
    snprintf(cmd, sizeof cmd, "%s etcd", c->local_sh);
    FILE *f = popen(cmd, "r");
    char line[512];
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\r\n")] = 0;
        if (strncmp(line, "join: ", 6) == 0 && strlen(line + 6) < sizeof c->hub_url) {
            memcpy(c->hub_url, line + 6, strlen(line + 6) + 1);
        }
    }
    if (f == NULL || pclose(f) != 0 || c->hub_url[0] == 0) {
        fprintf(stderr, "aims_demo: %s etcd failed (needs etcd-server)\n", script);
        return 1;
    }
    return 0;
}

static int start_hub(cluster *c)
{
    c->hub.name = "hub";
    if (c->etcd) {
        return start_etcd(c);
    }
    if (c->processes) {
        char *args[] = {"aims_node", "--name", "hub", "--listen", "tcp://127.0.0.1:0",
                        "--host-registry", "--heartbeat-ms", "200", NULL};
        return spawn_node(c, &c->hub, args, c->hub_url, sizeof c->hub_url);
    }
    CHECK(aims_registry_create(&c->reg));
    CHECK(aims_node_create("hub", &c->hub.node));
    CHECK(aims_node_listen(c->hub.node, "inproc://hub"));
    CHECK(aims_node_host_registry(c->hub.node, c->reg));
    snprintf(c->hub_url, sizeof c->hub_url, "inproc://hub");
    return 0;
}

static int start_pre(cluster *c, const char *pipeline_path, const aims_pipeline *p)
{
    c->pre.name = "pre";
    if (c->processes) {
        char url[128], spec[PATH_MAX + 64], addr[256];
        snprintf(url, sizeof url, "ipc://%s/pre.sock", c->dir);
        snprintf(spec, sizeof spec, "preprocess.fmnist=%s", pipeline_path);
        char *args[] = {"aims_node", "--name", "pre", "--listen", url, "--join", c->hub_url,
                        "--preprocess", spec, "--heartbeat-ms", "200", NULL};
        return spawn_node(c, &c->pre, args, addr, sizeof addr);
    }
    if (local_node(c, &c->pre, "inproc://pre") != 0) {
        return 1;
    }
    CHECK(aims_service_add_preprocess(c->pre.node, "preprocess.fmnist", p, &c->pre.service));
    CHECK(aims_service_start(c->pre.service));
    return 0;
}

static int start_train(cluster *c)
{
    c->train.name = "train";
    c->train2.name = "train2";
    if (c->processes) { /* two train nodes sharing one checkpoint store (lifecycle) */
        char addr[256], store[PATH_MAX + 64];
        demo_life_store_flag(c->dir, store, sizeof store);
        member *const ms[2] = {&c->train, &c->train2};
        for (int i = 0; i < 2; i++) {
            char *args[] = {"aims_node", "--name", (char *)ms[i]->name, "--listen",
                            "tcp://127.0.0.1:0", "--join", c->hub_url, "--train",
                            "train.fmnist", "--train-store", store, "--optimize",
                            "optimize.fmnist", "--max-frame", "536870912", "--heartbeat-ms",
                            "200", NULL};
            if (spawn_node(c, ms[i], args, addr, sizeof addr) != 0) {
                return 1;
            }
            c->life.train_pid[i] = &ms[i]->pid;
        }
        return 0;
    }
    if (local_node(c, &c->train, "inproc://train") != 0) {
        return 1;
    }
    CHECK(aims_service_add_train(c->train.node, "train.fmnist", NULL, &c->train.service));
    CHECK(aims_service_start(c->train.service));
    aims_service *opt = NULL; /* the optimize service (owned by the node) */
    CHECK(aims_service_add_optimize(c->train.node, "optimize.fmnist", &opt));
    CHECK(aims_service_start(opt));
    return 0;
}

static int start_infer(cluster *c, int i, const char *bundle_path, const aims_bundle *b)
{
    static const char *const names[N_REPLICAS] = {"infer-a", "infer-b"};
    member *m = &c->infer[i];
    m->name = names[i];
    if (c->processes) {
        char url[128], spec[PATH_MAX + 64], addr[256];
        if (i == 0) {
            snprintf(url, sizeof url, "tcp://127.0.0.1:0");
        } else {
            snprintf(url, sizeof url, "ipc://%s/%s.sock", c->dir, m->name);
        }
        snprintf(spec, sizeof spec, "infer.fmnist@1=%s", bundle_path);
        /* One worker: a replica is one core's worth of serving (see 5b). */
        char *args[] = {"aims_node", "--name", (char *)m->name, "--listen", url, "--join",
                        c->hub_url, "--infer", spec, "--heartbeat-ms", "200", "--workers", "1",
                        NULL, NULL, NULL, NULL, NULL};
        int na = 13;
        m->http = i == 0 && c->http_on;
        if (m->http) { /* the front door on infer-a, any free loopback port */
            args[na++] = "--http";
            args[na++] = "127.0.0.1:0";
        }
        if (!c->tls) { /* lifecycle requests need a policy (demo_lifecycle.c) */
            if (c->infer_policy[0] == 0 &&
                demo_life_plain_policy(c->dir, c->infer_policy, sizeof c->infer_policy) != 0) {
                return 1;
            }
            args[na++] = "--policy";
            args[na++] = c->infer_policy;
        }
        const int rc = spawn_node(c, m, args, addr, sizeof addr);
        memcpy(m->addr, addr, sizeof m->addr);
        return rc;
    }
    if (m->node == NULL) {
        char url[64];
        snprintf(url, sizeof url, "inproc://%s", m->name);
        if (local_node(c, m, url) != 0) {
            return 1;
        }
        /* A replica is one core's worth of serving: one worker, and calls
         * never run on the caller's thread (so the caller's core is not the
         * replica's), which is what makes parallelism mean something (5b). */
        CHECK(aims_node_set_param_i64(m->node, AIMS_NODE_WORKERS, 1));
        CHECK(aims_service_add_infer(m->node, "infer.fmnist@1", b, &m->service));
        CHECK(aims_service_set_param_i64(m->service, AIMS_SERVICE_INLINE, 0));
        /* At most 8 rows per run: 8 one-row calls (step 4), so with WINDOW
         * calls in flight over two replicas a worker leaves calls queued for
         * its next run instead of idling until the client refills; a 64-row
         * call (5b) runs alone, and admission counts it as one run. */
        CHECK(aims_service_set_param_i64(m->service, AIMS_SERVICE_BATCH_MAX, 8));
    }
    CHECK(aims_service_start(m->service));
    if (i == 0 && c->http_on && c->http == NULL) {
        CHECK(aims_http_create(m->node, &c->http));
        CHECK(aims_http_set_listen(c->http, "127.0.0.1:0"));
        CHECK(aims_http_start(c->http));
        CHECK(aims_http_url(c->http, c->http_url, sizeof c->http_url, NULL));
    }
    return 0;
}

/* Take replica i out (drain) -- the "deployment" half of a restart. */
static int stop_infer(cluster *c, int i)
{
    if (c->processes) {
        stop_process(&c->infer[i]);
        return 0;
    }
    CHECK(aims_service_stop(c->infer[i].service, 5000));
    return 0;
}

static void cluster_down(cluster *c)
{
    aims_http_destroy(c->http); /* before its node */
    c->http = NULL;
    for (int i = 0; i < N_REPLICAS; i++) {
        stop_process(&c->infer[i]);
        aims_node_destroy(c->infer[i].node);
    }
    stop_process(&c->train);
    stop_process(&c->train2);
    aims_node_destroy(c->train.node);
    stop_process(&c->pre);
    aims_node_destroy(c->pre.node);
    stop_process(&c->hub);
    aims_node_destroy(c->hub.node);
    aims_registry_destroy(c->reg);
    if (c->local_sh[0] != 0) {
        char cmd[sizeof c->local_sh + 16];
        snprintf(cmd, sizeof cmd, "%s down", c->local_sh);
        if (system(cmd) != 0) {
            fprintf(stderr, "aims_demo: %s failed\n", cmd);
        }
        c->local_sh[0] = 0;
    }
}

/* Wait until the client's registry view resolves `service` (a call succeeds). */
static int wait_service(aims_client *cl, const char *service, int n_expected)
{
    (void)n_expected;
    aims_msg *req = NULL, *reply = NULL;
    CHECK(aims_msg_create(&req));
    CHECK(aims_msg_create(&reply));
    aims_status rc = AIMS_E_NOTFOUND;
    for (int tries = 0; tries < 200 && rc != AIMS_OK; tries++) {
        rc = aims_client_call(cl, service, "$ping", req, reply, AIMS_CALL_IDEMPOTENT, 1000);
        if (rc == AIMS_E_NOTFOUND || rc == AIMS_E_CLOSED || rc == AIMS_E_IO) {
            usleep(20000);
        } else if (rc != AIMS_OK) {
            break; /* e.g. a service without "info": it is there */
        }
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    return rc == AIMS_E_NOTFOUND ? 1 : 0;
}

/* ---- step 2: preprocess through the service ---------------------------------- */

static int preprocess_remote(aims_client *cl, const aims_dataset *raw, float **out_x,
                             double *out_s)
{
    const size_t rows = aims_dataset_rows(raw), cols = aims_dataset_cols(raw);
    float *x = malloc(rows * cols * sizeof *x);
    aims_msg *req = NULL, *reply = NULL;
    if (x == NULL) {
        return 1;
    }
    CHECK(aims_msg_create(&req));
    CHECK(aims_msg_create(&reply));
    const double t0 = now_s();
    for (size_t r = 0; r < rows; r += CHUNK) {
        const size_t n = rows - r < CHUNK ? rows - r : CHUNK;
        const uint64_t dims[2] = {n, cols};
        aims_msg_clear(req);
        CHECK(aims_msg_add(req, "x", AIMS_DT_F32, dims, 2, aims_dataset_features(raw) + r * cols,
                           AIMS_MSG_BORROW));
        CHECK(aims_client_call(cl, "preprocess.fmnist", "transform", req, reply,
                               AIMS_CALL_IDEMPOTENT, 30000));
        size_t i;
        const void *data;
        size_t bytes;
        CHECK(aims_msg_find(reply, "x", &i));
        CHECK(aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, &bytes));
        if (bytes != n * cols * sizeof(float)) {
            fprintf(stderr, "aims_demo: preprocess reply has %zu bytes\n", bytes);
            return 1;
        }
        memcpy(x + r * cols, data, bytes);
    }
    *out_s = now_s() - t0;
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    *out_x = x;
    return 0;
}

/* ---- step 3: a training job ------------------------------------------------------ */

static void draw_progress(int epoch, int epochs, double loss, double metric)
{
    const int width = 30, done = epochs > 0 ? width * epoch / epochs : 0;
    char vbuf[16] = "n/a";
    if (!isnan(metric)) {
        snprintf(vbuf, sizeof vbuf, "%.4f", metric);
    }
    if (isatty(STDOUT_FILENO)) {
        printf("\r  [%.*s%*s] epoch %d/%d  loss %.4f  val acc %s", done,
               "##############################", width - done, "", epoch, epochs, loss, vbuf);
    } else {
        printf("  epoch %d/%d  loss %.4f  val acc %s\n", epoch, epochs, loss, vbuf);
    }
    fflush(stdout);
}

static double get_f32(const aims_msg *m, const char *name)
{
    size_t i;
    const void *data;
    float v;
    if (aims_msg_find(m, name, &i) != AIMS_OK ||
        aims_msg_get_tensor(m, i, NULL, NULL, NULL, NULL, &data, NULL) != AIMS_OK) {
        return NAN;
    }
    memcpy(&v, data, 4);
    return v;
}

static int train_remote(aims_client *cl, const float *x, const aims_dataset *raw, int epochs,
                        int threads, demo_life *life, aims_bundle **out_model_bundle,
                        double *out_s)
{
    const size_t rows = aims_dataset_rows(raw), cols = aims_dataset_cols(raw);
    aims_msg *req = NULL, *reply = NULL;
    CHECK(aims_msg_create(&req));
    CHECK(aims_msg_create(&reply));
    const uint64_t xd[2] = {rows, cols}, yd[1] = {rows};
    char spec[320];
    snprintf(spec, sizeof spec,
             "kind=mlp\nhidden=256\nactivation=relu\nclasses=10\noptimizer=1\nlr=0.001\n"
             "batch=128\nepochs=%d\nseed=42\ntrain_threads=%d\nval_fraction=0.1\n"
             "checkpoint_every_steps=100\ncheckpoint_every_ms=0\n",
             epochs, threads);
    const char *job = "fmnist-1";
    const uint64_t jd[1] = {strlen(job)}, sd[1] = {strlen(spec)};
    CHECK(aims_msg_add(req, "job", AIMS_DT_BYTES, jd, 1, job, 0));
    CHECK(aims_msg_add(req, "x", AIMS_DT_F32, xd, 2, x, AIMS_MSG_BORROW));
    CHECK(aims_msg_add(req, "y", AIMS_DT_I32, yd, 1, aims_dataset_labels(raw), AIMS_MSG_BORROW));
    CHECK(aims_msg_add(req, "spec", AIMS_DT_BYTES, sd, 1, spec, 0));
    printf("training MLP 784-256-10 as job '%s' on train.fmnist (Adam 1e-3, batch 128, "
           "%d epochs, 10%% held out):\n", job, epochs);
    const double t0 = now_s();
    /* A retried submit with the same job id never starts a second job. */
    CHECK(aims_client_call(cl, "train.fmnist", "submit", req, reply, AIMS_CALL_IDEMPOTENT,
                           120000));
    const double t_submit = now_s() - t0;
    aims_msg_clear(req);
    CHECK(aims_msg_add(req, "job", AIMS_DT_BYTES, jd, 1, job, 0));
    /* status and result need the job's secret handle that submit returned */
    size_t hi = 0, hn = 0;
    const void *hp = NULL;
    CHECK(aims_msg_find(reply, "handle", &hi));
    CHECK(aims_msg_get_tensor(reply, hi, NULL, NULL, NULL, NULL, &hp, &hn));
    const uint64_t hd[1] = {hn};
    CHECK(aims_msg_add(req, "handle", AIMS_DT_BYTES, hd, 1, hp, 0));
    int64_t state = 0, epoch = 0, last_epoch = -1;
    int misses = 0; /* status calls that failed in a row (a killed node) */
    while (state < 2) {
        usleep(100000);
        const aims_status rs = aims_client_call(cl, "train.fmnist", "status", req, reply,
                                                AIMS_CALL_IDEMPOTENT, 10000);
        if (rs != AIMS_OK && ++misses < 100) {
            continue;
        }
        CHECK(rs);
        misses = 0;
        if (demo_msg_i64(reply, "state", &state) != 0 ||
            demo_msg_i64(reply, "epoch", &epoch) != 0 ||
            demo_life_on_status(life, reply) != 0) {
            fprintf(stderr, "aims_demo: malformed status reply\n");
            return 1;
        }
        if (epoch != last_epoch && epoch > 0) {
            draw_progress((int)epoch, epochs, get_f32(reply, "loss"), get_f32(reply, "metric"));
            last_epoch = epoch;
        }
    }
    if (isatty(STDOUT_FILENO)) {
        printf("\n");
    }
    if (state != 2) {
        fprintf(stderr, "aims_demo: training job ended in state %lld\n", (long long)state);
        return 1;
    }
    const double t_done = now_s() - t0;
    CHECK(aims_client_call(cl, "train.fmnist", "result", req, reply, AIMS_CALL_IDEMPOTENT,
                           60000));
    *out_s = now_s() - t0;
    printf("  job: submitted in %.2f s, finished at %.2f s, result fetched at %.2f s\n",
           t_submit, t_done, *out_s);
    if (life->killed) {
        printf("  job resumed on %s after the kill: resumed_from step %lld, lost_steps %lld "
               "(checkpoint every %lld steps), adoptions %lld, fencing token %lld\n",
               life->owner, (long long)life->resumed_from, (long long)life->lost_steps,
               (long long)life->ckpt_every, (long long)life->adoptions, (long long)life->token);
    }
    size_t i;
    const void *data;
    size_t bytes;
    CHECK(aims_msg_find(reply, "bundle", &i));
    CHECK(aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, &bytes));
    CHECK(aims_bundle_parse(data, bytes, out_model_bundle));
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    return 0;
}

/* ---- step 4/5: serving through the client ----------------------------------------- */

typedef struct serve_run {
    aims_client *cl;
    const aims_dataset *test;
    size_t begin, end;
    size_t rows;            /* rows per call (1: each call is checked for accuracy) */
    atomic_size_t next, done, correct, failed;
    double *lat;            /* per call, seconds */
    atomic_size_t n_lat;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    atomic_int outstanding;
    double t_end;           /* when the last call completed (its completer writes it) */
} serve_run;

/* Calls started so far (next may run past end by one per late issue()). */
static size_t issued_of(serve_run *r)
{
    const size_t n = atomic_load(&r->next);
    return (n < r->end ? n : r->end) - r->begin;
}

typedef struct call_ctx {
    serve_run *run;
    size_t row;
    double t0;
    aims_msg *req;
} call_ctx;

static void on_reply(void *user, aims_status status, const aims_msg *reply, const char *error)
{
    call_ctx *cc = user;
    serve_run *r = cc->run;
    const double lat = now_s() - cc->t0;
    if (status == AIMS_OK) {
        size_t i;
        const void *data;
        float cls = -1;
        if (aims_msg_find(reply, "y", &i) == AIMS_OK &&
            aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, NULL) == AIMS_OK) {
            memcpy(&cls, data, 4);
        }
        if (r->rows == 1 && (int32_t)cls == aims_dataset_labels(r->test)[cc->row]) {
            atomic_fetch_add(&r->correct, 1);
        }
    } else {
        if (atomic_fetch_add(&r->failed, 1) < 3) {
            fprintf(stderr, "aims_demo: call failed: %s: %s\n", aims_strerror(status), error);
        }
    }
    const size_t k = atomic_fetch_add(&r->n_lat, 1);
    if (k < MAX_LAT) {
        r->lat[k] = lat;
    }
    aims_msg_destroy(cc->req);
    free(cc);
    /* Signal, do not issue the next call from here: an inproc call may run
     * on this very thread, and chaining calls from callbacks would recurse.
     * Only at the low water (half the window in flight) or at the very end:
     * the loader then wakes once per WINDOW/2 calls, not once per call -- a
     * wake-up per call was a context switch on the replicas' cores (5b). */
    const size_t total = r->end - r->begin;
    const size_t d = atomic_fetch_add(&r->done, 1) + 1;
    if (d == total) {
        r->t_end = now_s();
    }
    if (d == total || issued_of(r) - d <= WINDOW / 2) {
        pthread_mutex_lock(&r->lock);
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
    }
    atomic_fetch_sub(&r->outstanding, 1); /* the last touch of r: serve() waits for 0 */
}

/* Start the next call of the run, if any rows are left. */
static void issue(serve_run *r)
{
    const size_t row = atomic_fetch_add(&r->next, 1);
    if (row >= r->end) {
        return;
    }
    call_ctx *cc = calloc(1, sizeof *cc);
    const size_t cols = aims_dataset_cols(r->test);
    const uint64_t dims[2] = {r->rows, cols};
    /* Calls of several rows (the parallelism step) take consecutive rows,
     * wrapping around the test set. */
    const size_t first = r->rows == 1 ? row
                                      : row * r->rows % (aims_dataset_rows(r->test) - r->rows);
    if (cc == NULL || aims_msg_create(&cc->req) != AIMS_OK ||
        aims_msg_add(cc->req, "x", AIMS_DT_F32, dims, 2,
                     aims_dataset_features(r->test) + first * cols, AIMS_MSG_BORROW) != AIMS_OK) {
        if (cc != NULL) {
            aims_msg_destroy(cc->req);
        }
        free(cc);
        atomic_fetch_add(&r->failed, 1);
        if (atomic_fetch_add(&r->done, 1) + 1 == r->end - r->begin) {
            r->t_end = now_s();
        }
        return;
    }
    cc->run = r;
    cc->row = row;
    cc->t0 = now_s();
    atomic_fetch_add(&r->outstanding, 1);
    /* done runs exactly once, also when the call cannot start; it frees
     * cc->req, so the client borrows the request instead of copying it */
    aims_client_call_async(r->cl, "infer.fmnist", "predict", cc->req,
                           AIMS_CALL_IDEMPOTENT | AIMS_CALL_KEEP_REQUEST, 10000, on_reply, cc);
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct serve_result {
    size_t calls, correct, failed;
    double seconds, p50_us, p99_us, p999_us;
} serve_result;

/* Serve calls [begin, end) with WINDOW calls in flight; call i carries test
 * row i (rows == 1) or @p rows consecutive rows. */
static int serve(aims_client *cl, const aims_dataset *test, size_t begin, size_t end,
                 size_t rows, serve_result *out)
{
    serve_run *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return 1;
    }
    r->lat = malloc(MAX_LAT * sizeof *r->lat);
    if (r->lat == NULL) {
        free(r);
        return 1;
    }
    r->cl = cl;
    r->test = test;
    r->begin = begin;
    r->end = end;
    r->rows = rows;
    atomic_init(&r->next, begin);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    const double t0 = now_s();
    /* Up to WINDOW calls in flight (the server batches what arrives
     * together): fill the window, sleep until half of it completed, refill. */
    while (atomic_load(&r->next) < end) {
        while (atomic_load(&r->next) < end && issued_of(r) - atomic_load(&r->done) < WINDOW) {
            issue(r);
        }
        pthread_mutex_lock(&r->lock);
        while (atomic_load(&r->next) < end &&
               issued_of(r) - atomic_load(&r->done) > WINDOW / 2) {
            pthread_cond_wait(&r->cond, &r->lock);
        }
        pthread_mutex_unlock(&r->lock);
    }
    pthread_mutex_lock(&r->lock);
    while (atomic_load(&r->done) < end - begin) {
        pthread_cond_wait(&r->cond, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    while (atomic_load(&r->outstanding) > 0) { /* the last callbacks are returning */
        usleep(1000);
    }
    /* Up to the last completion, not this thread's wake-up after it. */
    out->seconds = r->t_end - t0;
    out->calls = end - begin;
    out->correct = atomic_load(&r->correct);
    out->failed = atomic_load(&r->failed);
    size_t n = atomic_load(&r->n_lat);
    n = n < MAX_LAT ? n : MAX_LAT;
    qsort(r->lat, n, sizeof *r->lat, cmp_double);
    out->p50_us = n ? r->lat[n / 2] * 1e6 : 0;
    out->p99_us = n ? r->lat[(size_t)((double)(n - 1) * 0.99)] * 1e6 : 0;
    out->p999_us = n ? r->lat[(size_t)((double)(n - 1) * 0.999)] * 1e6 : 0;
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r->lat);
    free(r);
    return 0;
}

/* Busy time of each replica (ns) -- in-process from the services, across
 * processes through the "$stats" method every service answers. */
static int replica_busy(cluster *c, aims_client *cl, double busy[N_REPLICAS])
{
    aims_msg *req = NULL, *reply = NULL;
    CHECK(aims_msg_create(&req));
    CHECK(aims_msg_create(&reply));
    for (int i = 0; i < N_REPLICAS; i++) {
        busy[i] = 0;
        if (!c->processes) {
            CHECK(aims_service_get_stat(c->infer[i].service, AIMS_SERVICE_STAT_BUSY_NS, &busy[i]));
            continue;
        }
        int64_t ns = 0;
        CHECK(aims_client_call_addr(cl, c->infer[i].addr, "infer.fmnist@1", "$stats", req,
                                    reply, 2000));
        if (demo_msg_i64(reply, "busy_ns", &ns) != 0) {
            fprintf(stderr, "aims_demo: $stats reply without busy_ns\n");
            return 1;
        }
        busy[i] = (double)ns;
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    return 0;
}

/* Background load for the rolling restart. */
typedef struct bg_load {
    aims_client *cl;
    const aims_dataset *test;
    atomic_int stop;
    serve_result res;
    size_t rounds;
} bg_load;

static void *bg_main(void *arg)
{
    bg_load *b = arg;
    serve_result total;
    memset(&total, 0, sizeof total);
    while (!atomic_load(&b->stop)) {
        serve_result r;
        if (serve(b->cl, b->test, 0, 500, 1, &r) != 0) {
            break;
        }
        total.calls += r.calls;
        total.failed += r.failed;
        total.p99_us = r.p99_us > total.p99_us ? r.p99_us : total.p99_us;
        b->rounds++;
    }
    b->res = total;
    return NULL;
}

/* ---- main ---------------------------------------------------------------------------- */

static int parse_args(int argc, char **argv, opts *o)
{
    o->data_dir = getenv("AIMS_DATA_DIR") != NULL ? getenv("AIMS_DATA_DIR") : "data-cache";
    o->processes = 0;
    o->etcd = 0;
    o->plain = 0;
    o->epochs = 5;
    o->threads = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--processes") == 0) {
            o->processes = 1;
        } else if (strcmp(a, "--etcd") == 0) {
            o->processes = 1;
            o->etcd = 1;
        } else if (strcmp(a, "--plain") == 0) {
            o->plain = 1;
        } else if (strcmp(a, "--data") == 0 && v != NULL) {
            o->data_dir = v;
            i++;
        } else if (strcmp(a, "--epochs") == 0 && v != NULL && atoi(v) > 0) {
            o->epochs = atoi(v);
            i++;
        } else if (strcmp(a, "--threads") == 0 && v != NULL && atoi(v) > 0) {
            o->threads = atoi(v);
            i++;
        } else {
            fprintf(stderr, "usage: aims_demo [--data DIR] [--processes [--plain]] [--etcd] "
                            "[--epochs N] [--threads N]\n");
            return -1;
        }
    }
    return 0;
}

static int locate_node_exe(cluster *c)
{
    char self[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        return 1;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash == NULL) {
        return 1;
    }
    if ((size_t)(slash - self) + 11 > sizeof c->exe) {
        return 1;
    }
    strcpy(slash, "/aims_node");
    memcpy(c->exe, self, strlen(self) + 1);
    if (access(c->exe, X_OK) != 0) {
        fprintf(stderr, "aims_demo: %s not found (build the examples)\n", c->exe);
        return 1;
    }
    return 0;
}

typedef struct summary {
    double t_load, t_fit, t_pre, t_train, t_publish;
    double acc_served;
    double t_quant, acc_fp32, acc_int8, p50_fp32_us, p50_int8_us;
    serve_result all, one, two;
    double lb_degree, parallelism, autonomy;
    int deployments, independent;
    size_t restart_calls, restart_failed;
    int http_checked, native_class, http_match;
    demo_http_result http;
    char http_url[128]; /* the front door checked (infer-a's first start) */
} summary;

/* 7. The HTTP front door on infer-a, as an outside program sees it: ready,
 * one KServe v2 JSON infer of test row 0 (its class must equal the native
 * client's), the Prometheus scrape. */
static int http_step(cluster *c, aims_client *cl, const aims_dataset *test, summary *s)
{
    if (!c->http_on) {
        printf("HTTP front door: libaims was built without it; skipped\n");
        return 0;
    }
    const size_t cols = aims_dataset_cols(test);
    const float *row = aims_dataset_features(test);
    const uint64_t dims[2] = {1, cols};
    aims_msg *req = NULL, *reply = NULL;
    CHECK(aims_msg_create(&req));
    CHECK(aims_msg_create(&reply));
    CHECK(aims_msg_add(req, "x", AIMS_DT_F32, dims, 2, row, AIMS_MSG_BORROW));
    const aims_status rc = aims_client_call(cl, "infer.fmnist", "predict", req, reply,
                                            AIMS_CALL_IDEMPOTENT, 10000);
    size_t i;
    const void *data;
    float cls = -1;
    if (rc == AIMS_OK && aims_msg_find(reply, "y", &i) == AIMS_OK &&
        aims_msg_get_tensor(reply, i, NULL, NULL, NULL, NULL, &data, NULL) == AIMS_OK) {
        memcpy(&cls, data, 4);
    }
    aims_msg_destroy(req);
    aims_msg_destroy(reply);
    CHECK(rc);
    s->native_class = (int)cls;
    printf("HTTP front door (KServe v2) for infer.fmnist@1 on infer-a: %s\n", c->http_url);
    if (demo_http_check(c->http_url, "infer.fmnist", "1", row, cols, &s->http) != 0) {
        fprintf(stderr, "aims_demo: the HTTP front door at %s did not answer\n", c->http_url);
        return 1;
    }
    s->http_checked = 1;
    memcpy(s->http_url, c->http_url, sizeof s->http_url);
    s->http_match = s->http.infer_status == 200 && s->http.infer_class == s->native_class;
    printf("  GET /v2/health/ready -> %d; POST /v2/models/infer.fmnist/versions/1/infer -> %d, "
           "class %d (native client: %d, %s) in %.0f us; GET /metrics -> %d, %zu bytes\n",
           s->http.ready_status, s->http.infer_status, s->http.infer_class, s->native_class,
           s->http_match ? "same" : "DIFFERENT", s->http.infer_us, s->http.metrics_status,
           s->http.metrics_bytes);
    if (s->http.ready_status != 200 || !s->http_match || s->http.metrics_status != 200 ||
        !s->http.metrics_has_model) {
        fprintf(stderr, "aims_demo: the HTTP front door check failed: ready %d, infer %d "
                "class %d vs native %d, metrics %d (%s the model)\n", s->http.ready_status,
                s->http.infer_status, s->http.infer_class, s->native_class,
                s->http.metrics_status, s->http.metrics_has_model ? "names" : "does not name");
        return 1;
    }
    return 0;
}

/* CHECK for run(): every exit goes through its one cleanup label. */
#define TRY(call)                                                                          \
    do {                                                                                   \
        const aims_status rc_ = (call);                                                    \
        if (rc_ != AIMS_OK) {                                                              \
            fprintf(stderr, "aims_demo: %s failed: %s: %s\n", #call, aims_strerror(rc_),   \
                    aims_errmsg());                                                        \
            goto out;                                                                      \
        }                                                                                  \
    } while (0)

/* The demo. Every exit, early or not, frees what it made (LSan under ASan) and
 * takes the cluster down. */
static int run(const opts *o, cluster *c, summary *s)
{
    char img[1024], lab[1024], timg[1024], tlab[1024], path[PATH_MAX];
    snprintf(img, sizeof img, "%s/fashion-mnist/train-images-idx3-ubyte", o->data_dir);
    snprintf(lab, sizeof lab, "%s/fashion-mnist/train-labels-idx1-ubyte", o->data_dir);
    snprintf(timg, sizeof timg, "%s/fashion-mnist/t10k-images-idx3-ubyte", o->data_dir);
    snprintf(tlab, sizeof tlab, "%s/fashion-mnist/t10k-labels-idx1-ubyte", o->data_dir);
    aims_dataset *train = NULL, *test = NULL;
    aims_pipeline *p = NULL;
    aims_client *cl = NULL;
    aims_bundle *trained = NULL, *served = NULL;
    float *train_x = NULL;
    int rc = 1;

    double t0 = now_s();
    TRY(aims_dataset_load_idx(img, lab, NULL, &train));
    TRY(aims_dataset_load_idx(timg, tlab, NULL, &test));
    s->t_load = now_s() - t0;
    printf("fashion-mnist: train %zu x %zu, test %zu (%.2f s)\n", aims_dataset_rows(train),
           aims_dataset_cols(train), aims_dataset_rows(test), s->t_load);

    /* 1. fit the pipeline (the data owner does this once) */
    t0 = now_s();
    TRY(aims_pipeline_create(&p));
    size_t step;
    TRY(aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, &step));
    TRY(aims_pipeline_set_step_param_f64(p, step, AIMS_STEP_FACTOR, 1.0 / 255.0));
    TRY(aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL));
    TRY(aims_pipeline_fit(p, train));
    snprintf(path, sizeof path, "%s/fmnist.aimsp", c->dir);
    TRY(aims_pipeline_save(p, path));
    s->t_fit = now_s() - t0;

    /* the cluster */
    if (start_hub(c) != 0 || start_pre(c, path, p) != 0 || start_train(c) != 0) {
        goto out;
    }
    TRY(aims_client_create(&cl));
    /* training sets travel as one frame: allow 512 MiB */
    TRY(aims_client_set_param_i64(cl, AIMS_CLIENT_MAX_FRAME, (int64_t)512 << 20));
    if (c->tls) { /* this program dials as demo-client */
        aims_tls_config *ct = NULL;
        TRY(aims_tls_config_create(&ct));
        const aims_status rc_ct = aims_tls_config_set_ca(ct, c->pki.ca) != AIMS_OK
                                      ? AIMS_E_INVAL
                                      : aims_tls_config_set_cert(ct, c->pki.client_cert,
                                                                 c->pki.client_key);
        if (rc_ct == AIMS_OK) {
            demo_http_set_ca(c->pki.ca);
        }
        const aims_status rc_set = rc_ct == AIMS_OK ? aims_client_set_tls(cl, ct) : rc_ct;
        aims_tls_config_destroy(ct); /* the client keeps its reference */
        TRY(rc_set);
    }
    TRY(aims_client_join(cl, c->hub_url));
    printf("cluster (%s): registry at %s; services preprocess.fmnist, train.fmnist\n",
           c->etcd        ? "separate processes on a 3-member etcd (deploy/local.sh)"
           : !c->processes ? "one process, inproc://"
           : c->tls        ? "separate processes, tls:// (mutual TLS 1.3, policy)"
                           : "separate processes, tcp:// + ipc://",
           c->hub_url);
    if (wait_service(cl, "preprocess.fmnist", 1) != 0 || wait_service(cl, "train.fmnist", 1)) {
        fprintf(stderr, "aims_demo: services did not appear in the registry\n");
        goto out;
    }

    /* 2. preprocess through the service */
    if (preprocess_remote(cl, train, &train_x, &s->t_pre) != 0) {
        goto out;
    }
    printf("preprocessed %zu rows through preprocess.fmnist in %.2f s\n",
           aims_dataset_rows(train), s->t_pre);

    /* 3. train as a job, then publish infer.fmnist@1 on two replicas */
    if (train_remote(cl, train_x, train, o->epochs, o->threads, &c->life, &trained,
                     &s->t_train) != 0) {
        goto out;
    }
    free(train_x);
    train_x = NULL;
    t0 = now_s();
    TRY(aims_bundle_create(p, aims_bundle_model(trained), &served));
    TRY(aims_bundle_set_meta(served, "name", "fmnist"));
    TRY(aims_bundle_set_meta(served, "version", "1"));
    snprintf(path, sizeof path, "%s/fmnist@1.aimsb", c->dir);
    TRY(aims_bundle_save(served, path));
    /* exactly once, through whatever registry the cluster uses (hub or etcd) */
    TRY(aims_client_publish_version(cl, "infer.fmnist", "1", "aims_demo", path));
    if (aims_client_publish_version(cl, "infer.fmnist", "1", "a-second-trainer", NULL) !=
        AIMS_E_EXISTS) {
        fprintf(stderr, "aims_demo: infer.fmnist@1 was published twice\n");
        goto out;
    }
    printf("published infer.fmnist@1 once (a second publisher was told: %s)\n",
           aims_client_errmsg(cl));
    for (int i = 0; i < N_REPLICAS; i++) {
        if (start_infer(c, i, path, served) != 0) {
            goto out;
        }
    }
    if (wait_service(cl, "infer.fmnist", N_REPLICAS) != 0) {
        goto out;
    }
    s->t_publish = now_s() - t0;
    printf("trained in %.2f s; published infer.fmnist@1 on %d replicas in %.2f s\n",
           s->t_train, N_REPLICAS, s->t_publish);

    /* 4. serve the whole test set */
    double busy0[N_REPLICAS], busy1[N_REPLICAS];
    if (replica_busy(c, cl, busy0) != 0 ||
        serve(cl, test, 0, aims_dataset_rows(test), 1, &s->all) != 0 ||
        replica_busy(c, cl, busy1) != 0) {
        goto out;
    }
    s->acc_served = (double)s->all.correct / (double)s->all.calls;
    printf("served %zu raw test images through the client: accuracy %.4f, %zu failed, "
           "p50 %.0f us, p99 %.0f us, p99.9 %.0f us, %.0f calls/s\n",
           s->all.calls, s->acc_served, s->all.failed, s->all.p50_us, s->all.p99_us,
           s->all.p999_us, (double)s->all.calls / s->all.seconds);
    if (http_step(c, cl, test, s) != 0) {
        goto out;
    }

    /* 5a. load-balance degree: utilisation of each replica over the run
     * (busy time from the services' own counters, in-process or via $stats) */
    double avg = 0, max = 0;
    for (int i = 0; i < N_REPLICAS; i++) {
        const double u = (busy1[i] - busy0[i]) * 1e-9 / s->all.seconds;
        avg += u / N_REPLICAS;
        max = u > max ? u : max;
    }
    s->lb_degree = max > 0 ? avg / max : 0;

    /* 5b. parallelism = total capacity / single-instance capacity (the
     * seed's formula). Capacity is measured, not offered load: each replica
     * is one worker thread, the load comes from this one thread (async calls
     * of PAR_ROWS rows, WINDOW in flight; it sleeps while the window is full,
     * so it does not compete for the replicas' cores), and each side takes
     * the better of two runs. */
    enum { PAR_ROWS = 64, PAR_CALLS = 2000 };
    serve_result tmp;
    if (stop_infer(c, 1) != 0 || serve(cl, test, 0, 50, PAR_ROWS, &tmp) != 0 ||
        serve(cl, test, 0, PAR_CALLS, PAR_ROWS, &s->one) != 0 ||
        serve(cl, test, 0, PAR_CALLS, PAR_ROWS, &tmp) != 0) {
        goto out;
    }
    if (tmp.seconds < s->one.seconds) {
        s->one = tmp;
    }
    if (start_infer(c, 1, path, served) != 0 || wait_service(cl, "infer.fmnist", 2) != 0) {
        goto out;
    }
    usleep(300000); /* let the view settle on two replicas */
    if (serve(cl, test, 0, 50, PAR_ROWS, &tmp) != 0 ||
        serve(cl, test, 0, PAR_CALLS, PAR_ROWS, &s->two) != 0 ||
        serve(cl, test, 0, PAR_CALLS, PAR_ROWS, &tmp) != 0) {
        goto out;
    }
    if (tmp.seconds < s->two.seconds) {
        s->two = tmp;
    }
    /* Goodput: a failed or refused call is not capacity. */
    s->parallelism = ((double)(s->two.calls - s->two.failed) / s->two.seconds) /
                     ((double)(s->one.calls - s->one.failed) / s->one.seconds);
    const char *blas_threads = getenv("OPENBLAS_NUM_THREADS");
    printf("parallelism method: capacity = goodput rows/s of %d %d-row calls, up to %d in "
           "flight from one light client thread that refills at half (one wake-up per %d "
           "calls); each replica = 1 worker thread (OPENBLAS_NUM_THREADS=%s); 2 replicas / 1 "
           "replica, best of 2 runs each; failed calls %zu / %zu\n",
           PAR_CALLS, PAR_ROWS, WINDOW, WINDOW / 2,
           blas_threads != NULL ? blas_threads : "default", s->two.failed, s->one.failed);

    /* 5c. autonomy: restart each replica under load */
    bg_load bg;
    memset(&bg, 0, sizeof bg);
    bg.cl = cl;
    bg.test = test;
    pthread_t th;
    pthread_create(&th, NULL, bg_main, &bg);
    usleep(200000);
    for (int i = 0; i < N_REPLICAS; i++) {
        const size_t failed_before = 0;
        (void)failed_before;
        if (stop_infer(c, i) != 0 || start_infer(c, i, path, served) != 0) {
            atomic_store(&bg.stop, 1);
            pthread_join(th, NULL);
            goto out;
        }
        usleep(300000);
        s->deployments++;
    }
    atomic_store(&bg.stop, 1);
    pthread_join(th, NULL);
    s->restart_calls = bg.res.calls;
    s->restart_failed = bg.res.failed;
    /* A redeployment is independent when no call failed and p99 stayed within
     * 10x the steady p99 (the whole window is judged: failures are attributed
     * to every deployment in it, the conservative reading). */
    const int held = bg.res.failed == 0 && bg.res.p99_us <= 10 * s->all.p99_us + 1000;
    s->independent = held ? s->deployments : 0;
    s->autonomy = s->deployments ? (double)s->independent / s->deployments : 0;
    printf("seed metrics: load-balance degree %.3f (p99 %.0f us), parallelism %.2f "
           "(%.0f vs %.0f rows/s), autonomy degree %.2f (%d/%d restarts independent, "
           "%zu calls during them, %zu failed)\n",
           s->lb_degree, s->all.p99_us, s->parallelism,
           (double)(s->two.calls - s->two.failed) * PAR_ROWS / s->two.seconds,
           (double)(s->one.calls - s->one.failed) * PAR_ROWS / s->one.seconds,
           s->autonomy, s->independent, s->deployments,
           s->restart_calls, s->restart_failed);

    /* 6. optimize through optimize.fmnist, then 6b. the int8 version as a
     * canary under the demo's own load until it is promoted (demo_lifecycle.c) */
    demo_life *L = &c->life;
    if (demo_life_optimize(cl, path, test, train, L) != 0) {
        goto out;
    }
    s->t_quant = L->t_optimize;
    s->acc_fp32 = L->fp32_acc;
    s->acc_int8 = L->int8_acc;
    s->p50_fp32_us = L->fp32_lat_us;
    s->p50_int8_us = L->int8_lat_us;
    memset(&bg, 0, sizeof bg);
    bg.cl = cl;
    bg.test = test;
    pthread_create(&th, NULL, bg_main, &bg);
    const int canary_rc = demo_life_canary(cl, L);
    atomic_store(&bg.stop, 1);
    pthread_join(th, NULL);
    L->canary_calls = bg.res.calls;
    L->canary_failed = bg.res.failed;
    printf("canary load: %zu calls, %zu failed\n", L->canary_calls, L->canary_failed);
    if (canary_rc != 0 || L->canary_failed != 0 || (c->processes && L->adoptions < 1)) {
        fprintf(stderr, "aims_demo: lifecycle incomplete (canary %s, %zu failed calls, %lld "
                        "adoptions)\n", canary_rc == 0 ? "promoted" : "not promoted",
                L->canary_failed, (long long)L->adoptions);
        goto out;
    }
    rc = 0;
out: /* every exit: what was made is freed (the cluster first: its nodes serve the bundles) */
    aims_client_destroy(cl);
    aims_bundle_destroy(trained);
    cluster_down(c);
    aims_bundle_destroy(served);
    aims_pipeline_destroy(p);
    aims_dataset_destroy(test);
    aims_dataset_destroy(train);
    free(train_x);
    if (rc != 0) {
        return 1;
    }
    if (s->acc_served < 0.85) {
        fprintf(stderr, "aims_demo: served accuracy %.4f is below the 0.85 floor\n",
                s->acc_served);
        return 1;
    }
    return s->all.failed == 0 && s->restart_failed == 0 ? 0 : 1;
}
#undef TRY

int main(int argc, char **argv)
{
    /* A replica is one core's worth of serving (5b), but OpenBLAS threads
     * every batched predict over all cores unless OPENBLAS_NUM_THREADS says
     * otherwise, and it reads that only when it loads. So, when the user has
     * not chosen, run again with 1 (training uses libaims' own threads on
     * AVX-512; the choice is printed with the parallelism method). */
    if (getenv("OPENBLAS_NUM_THREADS") == NULL && setenv("OPENBLAS_NUM_THREADS", "1", 1) == 0) {
        execv("/proc/self/exe", argv);
        /* exec failed: carry on with OpenBLAS's default */
    }
    opts o;
    if (parse_args(argc, argv, &o) != 0) {
        return 2;
    }
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/fashion-mnist/train-images-idx3-ubyte", o.data_dir);
    if (access(probe, R_OK) != 0) {
        fprintf(stderr, "aims_demo: data missing (%s); run `make demo`\n", probe);
        return 77;
    }
    cluster c;
    memset(&c, 0, sizeof c);
    demo_life_init(&c.life);
    c.processes = o.processes;
    c.etcd = o.etcd;
    snprintf(c.dir, sizeof c.dir, "/tmp/aims-demo-XXXXXX");
    if (mkdtemp(c.dir) == NULL || (o.processes && locate_node_exe(&c) != 0)) {
        fprintf(stderr, "aims_demo: cannot prepare %s\n", c.dir);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    aims_http *http_probe = NULL; /* a NULL node: misuse when built with HTTP */
    c.http_on = aims_http_create(NULL, &http_probe) != AIMS_E_UNSUPPORTED;
    aims_http_destroy(http_probe);
    printf("libaims %s  %s\n", aims_version_string(), aims_build_info());
    if (o.processes && !o.plain && !o.etcd) { /* over tls:// when the library has TLS */
        aims_tls_config *probe_tls = NULL;
        const aims_status has_tls = aims_tls_config_create(&probe_tls);
        aims_tls_config_destroy(probe_tls);
        if (has_tls != AIMS_OK) {
            printf("tls: libaims was built without TLS; the nodes use tcp:// and ipc://\n");
        } else if (demo_tls_make(c.dir, &c.pki) != 0) {
            char rm[128];
            snprintf(rm, sizeof rm, "rm -rf '%s'", c.dir);
            return system(rm) == 0 ? 1 : 1;
        } else {
            c.tls = 1;
            printf("tls: made a throw-away CA with the openssl CLI in %s; every node listens "
                   "on tls:// (mutual TLS 1.3, certificate node.demo), this program dials as "
                   "demo-client, every node enforces the policy %s; the HTTP front door "
                   "serves HTTPS\n", c.pki.dir, c.pki.policy);
        }
    }
    summary s;
    memset(&s, 0, sizeof s);
    const double t0 = now_s();
    const int rc = run(&o, &c, &s); /* takes the cluster down on every path */
    const double total = now_s() - t0;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c.dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "aims_demo: could not remove %s\n", c.dir);
    }
    printf("{\"demo\":\"cluster\",\"ok\":%s,\"version\":\"%s\",\"mode\":\"%s\","
           "\"preprocess_s\":%.3f,\"train_s\":%.3f,\"publish_s\":%.3f,"
           "\"served\":{\"calls\":%zu,\"failed\":%zu,\"accuracy\":%.4f,\"p50_us\":%.1f,"
           "\"p99_us\":%.1f,\"p999_us\":%.1f,\"calls_per_s\":%.1f},"
           "\"seed_metrics\":{\"load_balance_degree\":%.4f,\"parallelism\":%.3f,"
           "\"autonomy_degree\":%.3f},\"restart\":{\"deployments\":%d,\"calls\":%zu,"
           "\"failed\":%zu},\"int8\":{\"quantize_s\":%.3f,\"accuracy\":%.4f,"
           "\"fp32_accuracy\":%.4f,\"p50_us\":%.1f,\"fp32_p50_us\":%.1f},"
           "\"http\":{\"checked\":%s,\"url\":\"%s\",\"ready_status\":%d,"
           "\"infer_status\":%d,\"infer_class\":%d,\"native_class\":%d,\"match\":%s,"
           "\"infer_us\":%.1f,\"metrics_status\":%d,\"metrics_bytes\":%zu},"
           "\"total_s\":%.3f,",
           rc == 0 ? "true" : "false", aims_version_string(),
           o.etcd ? "etcd" : !o.processes ? "inproc" : c.tls ? "processes-tls" : "processes",
           s.t_pre, s.t_train, s.t_publish, s.all.calls,
           s.all.failed, s.acc_served, s.all.p50_us, s.all.p99_us, s.all.p999_us,
           s.all.seconds > 0 ? (double)s.all.calls / s.all.seconds : 0.0,
           isnan(s.lb_degree) ? -1.0 : s.lb_degree, s.parallelism, s.autonomy, s.deployments,
           s.restart_calls, s.restart_failed, s.t_quant, s.acc_int8, s.acc_fp32, s.p50_int8_us,
           s.p50_fp32_us, s.http_checked ? "true" : "false", s.http_url,
           s.http.ready_status, s.http.infer_status, s.http.infer_class, s.native_class,
           s.http_match ? "true" : "false", s.http.infer_us, s.http.metrics_status,
           s.http.metrics_bytes, total);
    demo_life_json(stdout, &c.life, o.processes);
    printf("}\n");
    demo_life_free(&c.life);
    return rc;
}
