/*
 * aims_node.c -- the node daemon: what a cluster scheduler (Kubernetes,
 * systemd, Slurm) runs, one process per pod (DESIGN.md §7).
 *
 *   aims_node --name N --listen URL [--listen URL ...]
 *             [--join REGISTRY_URL | --host-registry]
 *             [--infer NAME=BUNDLE_PATH] [--preprocess NAME=PIPELINE_PATH]
 *             [--train NAME [--train-store DIR]] [--optimize NAME] [--echo NAME]
 *             [--slow-us N] [--workers N] [--heartbeat-ms N] [--max-frame BYTES]
 *             [--queue-cap N] [--concurrency N] [--inline 0|1]
 *             [--tls-ca FILE|DIR --tls-cert FILE --tls-key FILE [--tls-peer NAME ...]]
 *             [--insecure]
 *
 * Security. Plain tcp:// serves only loopback addresses; across machines use
 * tls://HOST:PORT with --tls-ca/--tls-cert/--tls-key (mutual TLS 1.3: clients
 * need a certificate from the same CA; --tls-peer limits which names may
 * connect; the same credentials dial a tls:// --join registry). --insecure
 * explicitly allows plain tcp:// on a non-loopback address (a trusted network
 * only). See docs/SECURITY.md.
 *             [--policy FILE] [--audit FILE]
 *
 * --policy loads an authorization policy (docs/POLICY.md) and enforces it on
 * every request; --audit appends one JSON line per audit event (joins,
 * registrations, denials, train submits, results, model swaps) to FILE.
 *             [--http HOST:PORT [--http-insecure]]
 *             [--param NAME=VALUE ...]
 *
 * --param sets an integer parameter by its aims_param_by_name() name on every
 * service (AIMS_SERVICE_*: e.g. climit_tolerance_pct=0, lifo=1, batch_max=64)
 * or on the HTTP front door (AIMS_HTTP_*: e.g. http_timeout_ms=2000).
 *
 * With --tls-cert/--tls-key the --http door serves HTTPS with the same
 * certificate (any address; the URL line says https://).
 *
 * Installed as `aims-node` (the build tree keeps the name aims_node for the
 * tests). --help prints the usage on stdout and exits 0; --version prints the
 * library version. Every flag may also come from the environment:
 * AIMS_NODE_<FLAG> (upper case, '-' as '_'), e.g. AIMS_NODE_LISTEN=tcp://...,
 * AIMS_NODE_HOST_REGISTRY=1; flags on the command line win; repeatable flags
 * take ','-separated lists (node_log.h). Logs (the daemon's and the
 * library's) go to stderr: human-readable on a terminal, JSON lines otherwise
 * (--log-format text|json|auto, --log-level debug|info|warn|error).
 * SIGHUP reloads what can be re-read: every --infer bundle is loaded again from
 * its path and swapped in (calls in flight finish on the old one); a bundle
 * that fails to load is logged and the old one keeps serving. Listeners,
 * registry and other flags are not re-read (restart for those).
 *
 * Every service flag may repeat. Once every service is started the daemon
 * prints one line "ready <first-address>" on stdout (flushed): that is the
 * readiness signal for a scheduler's probe or a test harness, and the first
 * address is where port 0 was resolved. SIGTERM or SIGINT stops it gracefully:
 * each service drains (leaves the registry, finishes its work), then the node
 * is destroyed and the process exits 0. Errors exit 1, usage errors 2.
 * The services drain in parallel (one thread each), so shutdown costs one
 * drain however many services the node hosts.
 *
 * Signals. They are blocked before the node starts its threads (threads
 * inherit the mask), and the shutdown and reload run on the main thread. A
 * plain sigwait() is not enough: threads that exist before main() (OpenBLAS
 * starts its pool in a library constructor) do not block them, so a signal
 * arriving while the main thread is busy (printing "ready", reloading) went to
 * such a thread and its default action killed the process. So HUP/INT/TERM
 * get a handler that only writes the signal number to a self-pipe (whichever
 * thread runs it), and the main thread waits on that pipe with ppoll(), which
 * unblocks the three signals only while it waits.
 *
 * --train-mpi (under mpirun): rank 0 is this daemon and its --train services
 * train every job on all ranks; ranks 1..N-1 follow (node_mpi.c, docs/MPI.md).
 *
 * The echo service answers every method with the request's tensors plus "pid"
 * (i64: this process), so multi-process tests can see which instance answered;
 * --slow-us makes its handler spin that long first (load and overload tests).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <aims/aims_svc.h>
#include <aims/aims_tls.h>
#include <aims/aims_policy.h>
#include <aims/aims_http.h>
#include <aims/aims_https.h>
#include <aims/aims_optimize.h>
#include <aims/aims_jobs.h>
#include <aims/aims_lifecycle.h>
#include <aims/aims_train_mpi.h>

#include "node_log.h"
#include "node_mpi.h"

#define MAX_LISTEN 8
#define MAX_SERVICES 32

/* What one --infer/--preprocess/--train/--echo flag asked for. */
typedef enum svc_kind { K_INFER, K_PREPROCESS, K_TRAIN, K_ECHO, K_OPTIMIZE } svc_kind;

typedef struct svc_spec {
    svc_kind kind;
    char name[160];
    const char *path; /* bundle or pipeline file; NULL for train and echo */
} svc_spec;

typedef struct options {
    const char *name;
    const char *listen[MAX_LISTEN];
    size_t n_listen;
    const char *join;
    int host_registry;
    svc_spec svc[MAX_SERVICES];
    size_t n_svc;
    int64_t slow_us, workers, heartbeat_ms, max_frame, queue_cap, concurrency, inline_run;
    const char *tls_ca, *tls_cert, *tls_key;
    const char *tls_peer[MAX_LISTEN];
    size_t n_tls_peer;
    int insecure;
    const char *policy, *audit;
    const char *model_dir; /* --model-dir: where remote "load" may read bundles */
    const char *http; /* --http: KServe v2 / metrics front door address */
    int http_insecure;
    const char *train_store; /* --train-store: durable jobs of every --train (docs/JOBS.md) */
    int train_mpi;           /* --train-mpi: --train jobs run on every MPI rank (node_mpi.c) */
    const char *param[MAX_SERVICES]; /* --param NAME=VALUE */
    size_t n_param;
} options;

/* Objects the daemon created, released in reverse order by teardown(). */
typedef struct daemon_state {
    aims_node *node;
    aims_registry *registry;
    aims_service *svc[MAX_SERVICES];
    size_t n_svc, n_started;
    aims_bundle *bundle[MAX_SERVICES];
    aims_pipeline *pipeline[MAX_SERVICES];
    aims_policy *policy;
    FILE *audit;
    aims_http *http;
} daemon_state;

static int64_t g_slow_us; /* read-only once services start */

static void usage_to(FILE *f)
{
    fprintf(f,
            "usage: aims-node --name N --listen URL [--listen URL ...]\n"
            "                 [--join REGISTRY_URL | --host-registry]\n"
            "                 [--infer NAME=BUNDLE] [--preprocess NAME=PIPELINE]\n"
            "                 [--train NAME [--train-store DIR] [--train-mpi]] [--optimize NAME]\n"
            "                 [--echo NAME] [--slow-us N]\n"
            "                 [--workers N] [--heartbeat-ms N] [--max-frame BYTES]\n"
            "                 [--queue-cap N] [--concurrency N] [--inline 0|1]\n"
            "                 [--tls-ca FILE|DIR --tls-cert FILE --tls-key FILE]\n"
            "                 [--tls-peer NAME ...] [--insecure]\n"
            "                 [--policy FILE] [--audit FILE] [--model-dir DIR]\n"
            "                 [--http HOST:PORT [--http-insecure]]\n"
            "                 [--param NAME=VALUE ...]\n"
            "                 [--log-format text|json|auto] [--log-level debug|info|warn|error]\n"
            "       aims-node --help | --version\n");
}

static void usage(void)
{
    usage_to(stderr);
}

/* Flags of the environment (AIMS_NODE_<FLAG>) that repeat or take no value. */
static const char *const k_env_repeatable[] = {"listen", "infer", "preprocess", "train", "echo",
                                               "tls-peer", "param",
                                               NULL};
static const char *const k_env_switches[] = {"host-registry", "insecure", "http-insecure",
                                             "train-mpi", NULL};

static void help(void)
{
    usage_to(stdout);
    printf("\nRuns a libaims node: listens, joins or hosts a registry, serves the services\n"
           "named by --infer/--preprocess/--train/--echo. Prints \"ready <address>\" on stdout\n"
           "once serving. SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the --infer bundles.\n"
           "Every flag may be set as AIMS_NODE_<FLAG> in the environment (e.g.\n"
           "AIMS_NODE_LISTEN=tcp://127.0.0.1:7000, AIMS_NODE_HOST_REGISTRY=1); repeatable flags\n"
           "take comma-separated lists; the command line wins. Logs go to stderr: text on a\n"
           "terminal, JSON lines otherwise. Exit status: 0, 1 on failure, 2 on usage errors.\n");
}

/* Parse a non-negative decimal integer; 0 on success. */
static int parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* --param "NAME=VALUE": 1 with the parameter and value when NAME's number is
 * in [lo, hi], 0 when it is not, -1 when the spec is malformed. */
static int param_spec(const char *spec, int lo, int hi, aims_param *p, int64_t *v)
{
    char name[64];
    const char *eq = strchr(spec, '=');
    if (eq == NULL || eq == spec || (size_t)(eq - spec) >= sizeof name ||
        parse_i64(eq + 1, v) != 0) {
        return -1;
    }
    memcpy(name, spec, (size_t)(eq - spec));
    name[eq - spec] = '\0';
    if (aims_param_by_name(name, p) != AIMS_OK) {
        return -1;
    }
    return (int)*p >= lo && (int)*p <= hi;
}

/* "NAME=PATH" (infer, preprocess) or "NAME" (train, echo) into a spec. */
static int add_spec(options *o, svc_kind kind, const char *arg)
{
    if (o->n_svc == MAX_SERVICES) {
        fprintf(stderr, "aims_node: at most %d services\n", MAX_SERVICES);
        return -1;
    }
    svc_spec *sp = &o->svc[o->n_svc];
    const int needs_path = kind == K_INFER || kind == K_PREPROCESS;
    const char *eq = strchr(arg, '=');
    const size_t name_len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    if (name_len == 0 || name_len >= sizeof sp->name || (needs_path && (eq == NULL || eq[1] == '\0')) ||
        (!needs_path && eq != NULL)) {
        fprintf(stderr, "aims_node: bad service argument '%s'\n", arg);
        return -1;
    }
    sp->kind = kind;
    memcpy(sp->name, arg, name_len);
    sp->name[name_len] = '\0';
    sp->path = needs_path ? eq + 1 : NULL;
    o->n_svc++;
    return 0;
}

/* One flag with its value; returns 0, or -1 for a usage error. */
static int parse_flag(options *o, const char *flag, const char *val)
{
    int64_t *num = NULL;
    if (strcmp(flag, "--name") == 0) {
        o->name = val;
    } else if (strcmp(flag, "--listen") == 0) {
        if (o->n_listen == MAX_LISTEN) {
            fprintf(stderr, "aims_node: at most %d --listen\n", MAX_LISTEN);
            return -1;
        }
        o->listen[o->n_listen++] = val;
    } else if (strcmp(flag, "--http") == 0) {
        o->http = val;
        return 0;
    } else if (strcmp(flag, "--param") == 0) {
        aims_param p;
        int64_t v = 0;
        if (o->n_param == MAX_SERVICES ||
            (param_spec(val, 720, 739, &p, &v) != 1 && param_spec(val, 780, 799, &p, &v) != 1)) {
            fprintf(stderr, "aims_node: --param wants NAME=VALUE with the name of a service or "
                            "HTTP parameter and a non-negative integer (at most %d), got '%s'\n",
                    MAX_SERVICES, val);
            return -1;
        }
        o->param[o->n_param++] = val;
        return 0;
    } else if (strcmp(flag, "--join") == 0) {
        o->join = val;
    } else if (strcmp(flag, "--tls-ca") == 0) {
        o->tls_ca = val;
    } else if (strcmp(flag, "--tls-cert") == 0) {
        o->tls_cert = val;
    } else if (strcmp(flag, "--tls-key") == 0) {
        o->tls_key = val;
    } else if (strcmp(flag, "--tls-peer") == 0) {
        if (o->n_tls_peer == MAX_LISTEN) {
            fprintf(stderr, "aims_node: at most %d --tls-peer\n", MAX_LISTEN);
            return -1;
        }
        o->tls_peer[o->n_tls_peer++] = val;
    } else if (strcmp(flag, "--policy") == 0) {
        o->policy = val;
    } else if (strcmp(flag, "--audit") == 0) {
        o->audit = val;
    } else if (strcmp(flag, "--model-dir") == 0) {
        o->model_dir = val;
    } else if (strcmp(flag, "--infer") == 0) {
        return add_spec(o, K_INFER, val);
    } else if (strcmp(flag, "--preprocess") == 0) {
        return add_spec(o, K_PREPROCESS, val);
    } else if (strcmp(flag, "--train") == 0) {
        return add_spec(o, K_TRAIN, val);
    } else if (strcmp(flag, "--echo") == 0) {
        return add_spec(o, K_ECHO, val);
    } else if (strcmp(flag, "--train-store") == 0) {
        o->train_store = val; /* "DIR" or "dir:DIR[?lease_ms=N]" */
    } else if (strcmp(flag, "--optimize") == 0) {
        return add_spec(o, K_OPTIMIZE, val);
    } else if (strcmp(flag, "--slow-us") == 0) {
        num = &o->slow_us;
    } else if (strcmp(flag, "--workers") == 0) {
        num = &o->workers;
    } else if (strcmp(flag, "--heartbeat-ms") == 0) {
        num = &o->heartbeat_ms;
    } else if (strcmp(flag, "--max-frame") == 0) {
        num = &o->max_frame;
    } else if (strcmp(flag, "--queue-cap") == 0) {
        num = &o->queue_cap;
    } else if (strcmp(flag, "--concurrency") == 0) {
        num = &o->concurrency;
    } else if (strcmp(flag, "--inline") == 0) {
        num = &o->inline_run;
    } else if (strcmp(flag, "--log-format") == 0) {
        if (nlog_set_format(val) != 0) {
            fprintf(stderr, "aims-node: --log-format wants text, json or auto, got '%s'\n", val);
            return -1;
        }
    } else if (strcmp(flag, "--log-level") == 0) {
        if (nlog_set_level(val) != 0) {
            fprintf(stderr, "aims-node: --log-level wants debug, info, warn or error, got '%s'\n",
                    val);
            return -1;
        }
    } else {
        fprintf(stderr, "aims_node: unknown flag '%s'\n", flag);
        return -1;
    }
    if (num != NULL && parse_i64(val, num) != 0) {
        fprintf(stderr, "aims_node: %s needs a non-negative integer, got '%s'\n", flag, val);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->workers = o->heartbeat_ms = o->max_frame = o->queue_cap = o->concurrency = -1;
    o->inline_run = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--host-registry") == 0) {
            o->host_registry = 1;
            continue;
        }
        if (strcmp(argv[i], "--insecure") == 0) {
            o->insecure = o->http_insecure = 1; /* both doors */
            continue;
        }
        if (strcmp(argv[i], "--train-mpi") == 0) {
            o->train_mpi = 1;
            continue;
        }
        if (strcmp(argv[i], "--http-insecure") == 0) {
            o->http_insecure = 1;
            continue;
        }
        if (strcmp(argv[i], "--help") == 0 || i + 1 >= argc) {
            return -1;
        }
        if (parse_flag(o, argv[i], argv[i + 1]) != 0) {
            return -1;
        }
        i++;
    }
    if (o->name == NULL || o->n_listen == 0 || (o->join != NULL && o->host_registry)) {
        return -1;
    }
    if ((o->tls_cert == NULL) != (o->tls_key == NULL) ||
        (o->tls_cert != NULL && o->tls_ca == NULL)) {
        fprintf(stderr, "aims_node: --tls-cert and --tls-key go together, with --tls-ca\n");
        return -1;
    }
    return 0;
}

/* Busy-wait (not sleep): a slow handler that really occupies its worker. */
static void spin_us(int64_t us)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const int64_t end = (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec + us * 1000;
    do {
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((int64_t)t.tv_sec * 1000000000 + t.tv_nsec < end);
}

static aims_status echo_handler(void *user, const char *method, const aims_msg *req,
                                aims_msg *reply, uint64_t deadline_ns)
{
    (void)user;
    (void)method;
    (void)deadline_ns;
    if (g_slow_us > 0) {
        spin_us(g_slow_us);
    }
    const size_t n = aims_msg_num_tensors(req);
    for (size_t i = 0; i < n; i++) {
        const char *name;
        aims_dtype dt;
        size_t ndim;
        const uint64_t *dims;
        const void *data;
        aims_status rc = aims_msg_get_tensor(req, i, &name, &dt, &ndim, &dims, &data, NULL);
        if (rc == AIMS_OK && strcmp(name, "pid") != 0) {
            rc = aims_msg_add(reply, name, dt, dims, ndim, data, 0);
        }
        if (rc != AIMS_OK) {
            return rc;
        }
    }
    const int64_t pid = (int64_t)getpid();
    return aims_msg_add(reply, "pid", AIMS_DT_I64, NULL, 0, &pid, 0);
}

#define CHECK(st, call, what)                                                          \
    do {                                                                               \
        if ((call) != AIMS_OK) {                                                       \
            nlog(AIMS_LOG_ERROR, "%s: %s", (what),                                      \
                 (st)->node != NULL && aims_node_errmsg((st)->node)[0] != '\0'         \
                     ? aims_node_errmsg((st)->node)                                    \
                     : aims_errmsg());                                                 \
            return -1;                                                                 \
        }                                                                              \
    } while (0)

/* Add one service per spec, with the per-service parameters. */
static int add_services(daemon_state *st, const options *o)
{
    for (size_t i = 0; i < o->n_svc; i++) {
        const svc_spec *sp = &o->svc[i];
        aims_service *s = NULL;
        char what[256];
        snprintf(what, sizeof what, "service '%s'", sp->name);
        switch (sp->kind) {
        case K_INFER:
            CHECK(st, aims_bundle_load(sp->path, &st->bundle[i]), "--infer");
            CHECK(st, aims_service_add_infer(st->node, sp->name, st->bundle[i], &s), what);
            if (o->model_dir != NULL) { /* remote load by path (docs/LIFECYCLE.md) */
                CHECK(st, aims_service_set_model_dir(s, o->model_dir), "--model-dir");
            }
            break;
        case K_PREPROCESS:
            CHECK(st, aims_pipeline_load(sp->path, &st->pipeline[i]), "--preprocess");
            CHECK(st, aims_service_add_preprocess(st->node, sp->name, st->pipeline[i], &s), what);
            break;
        case K_TRAIN:
            CHECK(st, aims_service_add_train(st->node, sp->name, NULL, &s), what);
            if (o->train_store != NULL) {
                CHECK(st, aims_service_set_store(s, o->train_store), "--train-store");
            }
            if (o->train_mpi) {
                CHECK(st, aims_service_set_mpi(s, 1), "--train-mpi");
            }
            break;
        case K_ECHO:
            CHECK(st, aims_service_add_handler(st->node, sp->name, echo_handler, NULL, &s), what);
            break;
        case K_OPTIMIZE: /* docs/OPTIMIZE.md */
            CHECK(st, aims_service_add_optimize(st->node, sp->name, &s), what);
            break;
        }
        st->svc[st->n_svc++] = s;
        if (o->queue_cap >= 0) {
            CHECK(st, aims_service_set_param_i64(s, AIMS_SERVICE_QUEUE_CAP, o->queue_cap), what);
        }
        if (o->concurrency >= 0) {
            CHECK(st, aims_service_set_param_i64(s, AIMS_SERVICE_CONCURRENCY, o->concurrency),
                  what);
        }
        if (o->inline_run >= 0) {
            CHECK(st, aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, o->inline_run), what);
        }
        for (size_t k = 0; k < o->n_param; k++) {
            aims_param p;
            int64_t v = 0;
            if (param_spec(o->param[k], 720, 739, &p, &v) == 1) {
                CHECK(st, aims_service_set_param_i64(s, p, v), o->param[k]);
            }
        }
    }
    return 0;
}

/* --tls-*: one config for the node's tls:// listeners and its tls:// join. */
static int setup_tls(daemon_state *st, const options *o)
{
    aims_tls_config *cfg = NULL;
    if (aims_tls_config_create(&cfg) != AIMS_OK) {
        fprintf(stderr, "aims_node: --tls-ca: %s\n", aims_errmsg());
        return -1;
    }
    const char *what = "--tls-ca";
    aims_status rc = aims_tls_config_set_ca(cfg, o->tls_ca);
    if (rc == AIMS_OK && o->tls_cert != NULL) {
        what = "--tls-cert/--tls-key";
        rc = aims_tls_config_set_cert(cfg, o->tls_cert, o->tls_key);
    }
    for (size_t i = 0; rc == AIMS_OK && i < o->n_tls_peer; i++) {
        what = "--tls-peer";
        rc = aims_tls_config_add_peer_name(cfg, o->tls_peer[i]);
    }
    if (rc != AIMS_OK) {
        fprintf(stderr, "aims_node: %s: %s\n", what, aims_tls_config_errmsg(cfg));
        aims_tls_config_destroy(cfg);
        return -1;
    }
    rc = aims_node_set_tls(st->node, cfg);
    aims_tls_config_destroy(cfg); /* the node keeps its own reference */
    CHECK(st, rc, "--tls-ca");
    return 0;
}

/* --audit: one JSON line per event, flushed (the hook runs one event at a time). */
static void audit_line(void *user, int64_t unix_ms, aims_audit_action action,
                       const char *identity, const char *peer, const char *resource,
                       aims_status status, const char *detail)
{
    char line[2048];
    const size_t n = aims_audit_json(line, sizeof line, unix_ms, action, identity, peer,
                                     resource, status, detail);
    if (n < sizeof line) {
        fputs(line, user);
        fflush(user);
    }
}

/* --policy and --audit, before anything listens. */
static int secure(daemon_state *st, const options *o)
{
    if (o->audit != NULL) {
        st->audit = fopen(o->audit, "a");
        if (st->audit == NULL) {
            fprintf(stderr, "aims_node: --audit %s: %s\n", o->audit, strerror(errno));
            return -1;
        }
        CHECK(st, aims_node_set_audit(st->node, audit_line, st->audit), "--audit");
    }
    if (o->policy != NULL) {
        CHECK(st, aims_policy_create(&st->policy), "--policy");
        if (aims_policy_load_file(st->policy, o->policy) != AIMS_OK) {
            fprintf(stderr, "aims_node: --policy: %s\n", aims_policy_errmsg(st->policy));
            return -1;
        }
        CHECK(st, aims_node_set_policy(st->node, st->policy), "--policy");
    }
    return 0;
}

/* Node, listeners, registry, services: everything up to "ready". */
static int start(daemon_state *st, const options *o)
{
    CHECK(st, aims_node_create(o->name, &st->node), "node");
    if (secure(st, o) != 0) {
        return -1;
    }
    if (o->workers >= 0) {
        CHECK(st, aims_node_set_param_i64(st->node, AIMS_NODE_WORKERS, o->workers), "--workers");
    }
    if (o->heartbeat_ms >= 0) {
        CHECK(st, aims_node_set_param_i64(st->node, AIMS_NODE_HEARTBEAT_MS, o->heartbeat_ms),
              "--heartbeat-ms");
    }
    if (o->max_frame >= 0) {
        CHECK(st, aims_node_set_param_i64(st->node, AIMS_NODE_MAX_FRAME, o->max_frame),
              "--max-frame");
    }
    if (o->insecure) {
        CHECK(st, aims_node_set_param_i64(st->node, AIMS_NODE_INSECURE, 1), "--insecure");
    }
    if (o->tls_ca != NULL && setup_tls(st, o) != 0) {
        return -1;
    }
    for (size_t i = 0; i < o->n_listen; i++) {
        CHECK(st, aims_node_listen(st->node, o->listen[i]), o->listen[i]);
    }
    if (o->host_registry) {
        CHECK(st, aims_registry_create(&st->registry), "registry");
        CHECK(st, aims_node_host_registry(st->node, st->registry), "--host-registry");
    } else if (o->join != NULL) {
        CHECK(st, aims_node_join(st->node, o->join), o->join);
    }
    if (add_services(st, o) != 0) {
        return -1;
    }
    for (size_t i = 0; i < st->n_svc; i++) {
        CHECK(st, aims_service_start(st->svc[i]), o->svc[i].name);
        st->n_started = i + 1;
    }
    return 0;
}

/* HTTPS on the front door with the node's own --tls-cert/--tls-key; with
 * --tls-peer (the node requires named peers) it requires client certificates
 * from --tls-ca carrying those names too (mutual TLS, aims_https.h). */
static aims_status http_tls(aims_http *h, const options *o)
{
    aims_tls_config *cfg = NULL;
    aims_status rc = aims_tls_config_create(&cfg);
    if (rc == AIMS_OK) {
        rc = aims_tls_config_set_cert(cfg, o->tls_cert, o->tls_key);
    }
    if (rc == AIMS_OK && o->n_tls_peer > 0 && o->tls_ca != NULL) {
        rc = aims_tls_config_set_ca(cfg, o->tls_ca);
    }
    for (size_t i = 0; rc == AIMS_OK && o->tls_ca != NULL && i < o->n_tls_peer; i++) {
        rc = aims_tls_config_add_peer_name(cfg, o->tls_peer[i]);
    }
    if (rc == AIMS_OK) {
        rc = aims_http_set_tls(h, cfg);
    }
    aims_tls_config_destroy(cfg);
    return rc;
}

/* The HTTP front door (--http): started after the services, so its
 * readiness probe turns 200 once they are registered; prints its URL on the
 * line after "ready". With --tls-cert it serves HTTPS (aims_https.h). */
static int start_http(daemon_state *st, const options *o)
{
    aims_status rc = aims_http_create(st->node, &st->http);
    if (rc == AIMS_OK) {
        rc = aims_http_set_listen(st->http, o->http);
    }
    if (rc == AIMS_OK && o->tls_cert != NULL) {
        rc = http_tls(st->http, o);
    }
    if (rc == AIMS_OK && o->http_insecure) {
        rc = aims_http_set_param_i64(st->http, AIMS_HTTP_INSECURE, 1);
    }
    for (size_t k = 0; rc == AIMS_OK && k < o->n_param; k++) {
        aims_param p;
        int64_t v = 0;
        if (param_spec(o->param[k], 780, 799, &p, &v) == 1) {
            rc = aims_http_set_param_i64(st->http, p, v);
        }
    }
    if (rc == AIMS_OK) {
        rc = aims_http_start(st->http);
    }
    char url[128];
    if (rc == AIMS_OK) {
        rc = aims_http_url(st->http, url, sizeof url, NULL);
    }
    if (rc != AIMS_OK) {
        fprintf(stderr, "aims_node: --http %s: %s\n", o->http, aims_errmsg());
        return -1;
    }
    printf("http %s\n", url);
    return 0;
}

/* aims_service_stop on its own thread: every service drains at once, so the
 * shutdown takes one drain (grace + in-flight work), not one per service. */
static void *stop_main(void *arg)
{
    aims_service *s = arg;
    const aims_status rc = aims_service_stop(s, 5000);
    if (rc != AIMS_OK) {
        nlog(AIMS_LOG_ERROR, "stopping a service: %s: %s", aims_strerror(rc), aims_errmsg());
    }
    return NULL;
}

/* Drain every service, then destroy the node and what it served. */
static void teardown(daemon_state *st)
{
    pthread_t tid[MAX_SERVICES];
    int started[MAX_SERVICES] = {0};
    for (size_t i = 0; i < st->n_started; i++) {
        started[i] = pthread_create(&tid[i], NULL, stop_main, st->svc[i]) == 0;
        if (!started[i]) {
            stop_main(st->svc[i]); /* no thread: drain this one here */
        }
    }
    for (size_t i = 0; i < st->n_started; i++) {
        if (started[i]) {
            pthread_join(tid[i], NULL);
        }
    }
    aims_http_destroy(st->http); /* readiness said 503 during the drain; now close */
    aims_node_destroy(st->node); /* services belong to the node */
    for (size_t i = 0; i < MAX_SERVICES; i++) {
        aims_bundle_destroy(st->bundle[i]);
        aims_pipeline_destroy(st->pipeline[i]);
    }
    aims_registry_destroy(st->registry); /* after the node that hosted it */
    aims_policy_destroy(st->policy);     /* after the node that used it */
    if (st->audit != NULL) {
        fclose(st->audit);
    }
}

/* Self-pipe of the stop/reload signals (see the file comment). */
static int g_sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    const int saved = errno;
    const unsigned char b = (unsigned char)sig;
    if (write(g_sig_pipe[1], &b, 1) < 0) {
        /* pipe full: signals are already pending there */
    }
    errno = saved;
}

static int install_signals(const sigset_t *set)
{
    if (pipe2(g_sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_mask = *set;
    sa.sa_flags = SA_RESTART;
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        if (sigaction(sigs[i], &sa, NULL) != 0) {
            return -1;
        }
    }
    return 0;
}

/* The next stop/reload signal; the signals are unblocked only inside ppoll. */
static int next_signal(const sigset_t *set)
{
    sigset_t during;
    pthread_sigmask(SIG_SETMASK, NULL, &during);
    for (int s = 1; s < NSIG; s++) {
        if (sigismember(set, s) == 1) {
            sigdelset(&during, s);
        }
    }
    for (;;) {
        struct pollfd pfd = {g_sig_pipe[0], POLLIN, 0};
        if (ppoll(&pfd, 1, NULL, &during) > 0) {
            unsigned char b = 0;
            if (read(g_sig_pipe[0], &b, 1) == 1) {
                return b;
            }
        }
    }
}

/* SIGHUP: load every --infer bundle again and swap it in; keep the old one
 * when the file does not load (logged with the cause). */
static void reload(daemon_state *st, const options *o)
{
    nlog(AIMS_LOG_INFO, "SIGHUP: reloading %zu service(s)' files", st->n_svc);
    for (size_t i = 0; i < st->n_started; i++) {
        if (o->svc[i].kind != K_INFER) {
            continue;
        }
        aims_bundle *b = NULL;
        if (aims_bundle_load(o->svc[i].path, &b) != AIMS_OK) {
            nlog(AIMS_LOG_ERROR, "reload of '%s' from %s failed, still serving the old bundle: %s",
                 o->svc[i].name, o->svc[i].path, aims_errmsg());
            continue;
        }
        if (aims_service_swap_bundle(st->svc[i], b) != AIMS_OK) {
            nlog(AIMS_LOG_ERROR, "reload of '%s': swap refused: %s", o->svc[i].name,
                 aims_errmsg());
            aims_bundle_destroy(b);
            continue;
        }
        aims_bundle_destroy(st->bundle[i]);
        st->bundle[i] = b;
        nlog(AIMS_LOG_INFO, "reloaded '%s' from %s", o->svc[i].name, o->svc[i].path);
    }
}

int main(int argc, char **argv)
{
    static options opt;
    static daemon_state st;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help();
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("aims-node %s (libaims %s)\n", AIMS_VERSION_STRING, aims_version_string());
            return 0;
        }
    }
    char **args = nenv_args("AIMS_NODE_", argc, argv, k_env_repeatable, k_env_switches, &argc);
    if (args == NULL) {
        fprintf(stderr, "aims-node: out of memory\n");
        return 1;
    }
    argv = args;
    if (parse_args(argc, argv, &opt) != 0) {
        usage();
        return 2;
    }
    nlog_install("aims-node");
    g_slow_us = opt.slow_us;

    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &stop_set, NULL) != 0 || install_signals(&stop_set) != 0) {
        nlog(AIMS_LOG_ERROR, "cannot set up signal handling: %s", strerror(errno));
        return 1;
    }
    /* A peer that vanished mid-write must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);

    if (opt.train_mpi) { /* after the signal set-up: followers keep it (node_mpi.c) */
        int rank = 0, size = 1;
        if (node_mpi_init(&rank, &size) != 0) {
            return 1;
        }
        if (rank != 0) {
            return node_mpi_follow(rank);
        }
    }
    if (start(&st, &opt) != 0) {
        teardown(&st);
        node_mpi_finish();
        return 1;
    }
    char addr[512];
    size_t len = 0;
    if (aims_node_get_address(st.node, 0, addr, sizeof addr, &len) != AIMS_OK) {
        nlog(AIMS_LOG_ERROR, "address: %s", aims_node_errmsg(st.node));
        teardown(&st);
        node_mpi_finish();
        return 1;
    }
    printf("ready %s\n", addr);
    if (opt.http != NULL && start_http(&st, &opt) != 0) {
        teardown(&st);
        node_mpi_finish();
        return 1;
    }
    fflush(stdout);
    nlog(AIMS_LOG_INFO, "node %s ready at %s (%zu service(s)%s%s)", opt.name, addr, st.n_svc,
         opt.join != NULL ? ", joined " : opt.host_registry ? ", hosting the registry" : "",
         opt.join != NULL ? opt.join : "");

    int sig = 0;
    for (;;) {
        sig = next_signal(&stop_set);
        if (sig != SIGHUP) {
            break;
        }
        reload(&st, &opt);
    }
    nlog(AIMS_LOG_INFO, "%s: draining and stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    teardown(&st);
    node_mpi_finish(); /* --train-mpi: the followers stop after the services did */
    return 0;
}
