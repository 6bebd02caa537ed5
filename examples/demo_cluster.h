/*
 * demo_cluster.h -- the cluster aims_demo drives (demo_cluster.c): the hub,
 * the preprocess and train nodes and the N_REPLICAS infer replicas, in this
 * process on inproc:// or as aims_node child processes (tls://, or tcp:// and
 * ipc://; with --etcd, deploy/local.sh's etcd is the registry), started and
 * taken down for the steps in aims_demo.c. Also the demo's CHECK and TRY,
 * which both files use.
 */
#ifndef AIMS_DEMO_CLUSTER_H
#define AIMS_DEMO_CLUSTER_H

#include <limits.h>
#include <stdio.h>
#include <sys/types.h>

#include <aims/aims.h>

#include "demo_lifecycle.h"
#include "demo_tls.h"

/* A library call that must succeed: else say which one (`text`, spelled
 * before expansion) and why, then `on_fail` (CHECK: return 1; TRY: goto the
 * function's cleanup label). */
#define DEMO_CALL(call, text, on_fail)                                                     \
    do {                                                                                   \
        const aims_status rc_ = (call);                                                    \
        if (rc_ != AIMS_OK) {                                                              \
            fprintf(stderr, "aims_demo: %s failed: %s: %s\n", text, aims_strerror(rc_),    \
                    aims_errmsg());                                                        \
            on_fail;                                                                       \
        }                                                                                  \
    } while (0)
/* For a function that has made nothing yet. */
#define CHECK(call) DEMO_CALL(call, #call, return 1)
/* For a function that made something: its one cleanup label `out` frees it
 * (rc is still 1 there). */
#define TRY(call) DEMO_CALL(call, #call, goto out)

enum { N_REPLICAS = 2 };

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

/* Each returns 0, or 1 after printing why. */
int demo_start_hub(cluster *c);
int demo_start_pre(cluster *c, const char *pipeline_path, const aims_pipeline *p);
int demo_start_train(cluster *c);
/* Replica i serves bundle b (in-process) or the file at bundle_path. */
int demo_start_infer(cluster *c, int i, const char *bundle_path, const aims_bundle *b);
/* Take replica i out (drain) -- the "deployment" half of a restart. */
int demo_stop_infer(cluster *c, int i);
/* Every node and process down, every handle freed; safe on a partial cluster. */
void demo_cluster_down(cluster *c);
/* c->exe = the aims_node next to this program (--processes). */
int demo_locate_node_exe(cluster *c);

#endif
