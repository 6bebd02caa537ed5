/*
 * demo_cluster.c -- aims_demo's cluster (demo_cluster.h): nodes in this
 * process joined to an in-process hub, or aims_node child processes that
 * report "ready <address>" on their stdout (over tls:// every node gets the
 * throw-away PKI and the policy of demo_tls.c); --etcd starts the deploy
 * topology's etcd members with deploy/local.sh instead of a hub.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "demo_cluster.h"

#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

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

int demo_start_hub(cluster *c)
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

int demo_start_pre(cluster *c, const char *pipeline_path, const aims_pipeline *p)
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

int demo_start_train(cluster *c)
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

int demo_start_infer(cluster *c, int i, const char *bundle_path, const aims_bundle *b)
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
int demo_stop_infer(cluster *c, int i)
{
    if (c->processes) {
        stop_process(&c->infer[i]);
        return 0;
    }
    CHECK(aims_service_stop(c->infer[i].service, 5000));
    return 0;
}

void demo_cluster_down(cluster *c)
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


int demo_locate_node_exe(cluster *c)
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
