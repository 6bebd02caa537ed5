/*
 * bench_tls.c -- issue 10 goals P11a-c: tls:// against tcp:// through the
 * same node, service and client, side by side in one run (same process, same
 * machine load).
 *
 *   P11a  64 B request round trip p50 after the handshake (tls vs tcp)
 *   P11b  1 MiB request+reply frames, bytes/s (tls vs tcp; ABBA order, mb_rates)
 *   P11c  new connection + handshake + first call p50: tcp, tls with session
 *         resumption, tls without (a fresh config per connection)
 *
 * usage: bench_tls [ITERS_RT] [ITERS_MB] [ITERS_CONN]   (defaults 5000 200 200)
 * Needs AIMS_SOURCE_DIR (or the current directory) to find
 * tests/support/mkcerts.sh, which makes a throw-away PKI with the openssl CLI.
 * Prints one JSON object. The node runs inline handlers in this process: the
 * numbers are transport + framing + TLS cost on loopback, nothing else.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aims/aims.h>

#include "bench_util.h"

#define TRY(what, call)                                                                   \
    do {                                                                                  \
        const aims_status rc_ = (call);                                                   \
        if (rc_ != AIMS_OK) {                                                             \
            fprintf(stderr, "bench_tls: %s: %s (%s)\n", (what), aims_strerror(rc_),       \
                    aims_errmsg());                                                       \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

static char g_pki[64];

static aims_status echo_fn(void *user, const char *method, const aims_msg *req,
                           aims_msg *reply, uint64_t deadline_ns)
{
    (void)user, (void)method, (void)deadline_ns;
    for (size_t i = 0; i < aims_msg_num_tensors(req); i++) {
        const char *name;
        aims_dtype dt;
        size_t nd, bytes;
        const uint64_t *dims;
        const void *data;
        aims_status rc = aims_msg_get_tensor(req, i, &name, &dt, &nd, &dims, &data, &bytes);
        if (rc == AIMS_OK) {
            rc = aims_msg_add(reply, name, dt, dims, nd, data, 0);
        }
        if (rc != AIMS_OK) {
            return rc;
        }
    }
    return AIMS_OK;
}

static aims_tls_config *cfg_for(const char *who)
{
    aims_tls_config *cfg = NULL;
    char a[160], b[160], c[160];
    TRY("tls config", aims_tls_config_create(&cfg));
    snprintf(a, sizeof a, "%s/ca.pem", g_pki);
    snprintf(b, sizeof b, "%s/%s.pem", g_pki, who);
    snprintf(c, sizeof c, "%s/%s.key", g_pki, who);
    TRY("set_ca", aims_tls_config_set_ca(cfg, a));
    TRY("set_cert", aims_tls_config_set_cert(cfg, b, c));
    return cfg;
}

static aims_msg *payload(size_t bytes)
{
    aims_msg *m = NULL;
    TRY("msg", aims_msg_create(&m));
    uint8_t *buf = calloc(1, bytes);
    if (buf == NULL) {
        exit(1);
    }
    const uint64_t dims[1] = {bytes};
    TRY("msg add", aims_msg_add(m, "x", AIMS_DT_U8, dims, 1, buf, 0));
    free(buf);
    return m;
}

static aims_client *client_for(aims_tls_config *cfg)
{
    aims_client *c = NULL;
    TRY("client", aims_client_create(&c));
    if (cfg != NULL) {
        TRY("client tls", aims_client_set_tls(c, cfg));
    }
    return c;
}

/* p50 of one 64 B round trip, microseconds. */
static double rt_p50(const char *addr, aims_tls_config *cfg, long iters)
{
    aims_client *c = client_for(cfg);
    aims_msg *req = payload(64), *rep = NULL;
    TRY("msg", aims_msg_create(&rep));
    double *v = malloc(sizeof *v * (size_t)iters);
    for (long i = 0; i < iters / 10 + 10; i++) { /* connect + warm up */
        TRY("warm-up call", aims_client_call_addr(c, addr, "echo", "m", req, rep, 0));
    }
    for (long i = 0; i < iters; i++) {
        const double t0 = now_s();
        TRY("call", aims_client_call_addr(c, addr, "echo", "m", req, rep, 0));
        v[i] = (now_s() - t0) * 1e6;
    }
    const double p50 = median_sort(v, (size_t)iters);
    free(v);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    return p50;
}

/* Request + reply bytes per second with 1 MiB frames. Seconds of `iters`
 * calls (after one warm-up call). */
static double mb_secs(const char *addr, aims_tls_config *cfg, long iters)
{
    aims_client *c = client_for(cfg);
    aims_msg *req = payload((size_t)1 << 20), *rep = NULL;
    TRY("msg", aims_msg_create(&rep));
    TRY("warm-up call", aims_client_call_addr(c, addr, "echo", "m", req, rep, 0));
    const double t0 = now_s();
    for (long i = 0; i < iters; i++) {
        TRY("call", aims_client_call_addr(c, addr, "echo", "m", req, rep, 0));
    }
    const double dt = now_s() - t0;
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    aims_client_destroy(c);
    return dt;
}

/* P11b in ABBA order (tcp, tls, tls, tcp; half the calls each time): with
 * tcp:// always first, tcp paid the process's first-touch costs alone (fresh
 * 1 MiB buffers page-faulting while malloc's mmap threshold adapts) and came
 * out ~1.5-2x SLOWER than tls://; run the other way round, tcp:// was faster.
 * ABBA gives each transport the same share of early and late calls. */
static void mb_rates(const char *tcp, const char *tls, aims_tls_config *cfg, long iters,
                     double *tcp_bps, double *tls_bps)
{
    const long h1 = iters / 2 > 0 ? iters / 2 : 1, h2 = iters - h1 > 0 ? iters - h1 : 1;
    const double a1 = mb_secs(tcp, NULL, h1);
    const double b1 = mb_secs(tls, cfg, h1);
    const double b2 = mb_secs(tls, cfg, h2);
    const double a2 = mb_secs(tcp, NULL, h2);
    const double bytes = 2.0 * (double)(h1 + h2) * (double)(1u << 20);
    *tcp_bps = bytes / (a1 + a2);
    *tls_bps = bytes / (b1 + b2);
}

/* p50 of connect + handshake + first call, microseconds. mode: 0 tcp, 1 tls
 * resuming (one config), 2 tls full handshakes (a fresh config each time).
 * A first call that fails (on a loaded machine the client's 2 s connect bound
 * can pass before a starved handshake ends) is counted in *failed, not timed. */
static long g_conn_failed[3];

static double conn_p50(const char *addr, int mode, long iters)
{
    aims_msg *req = payload(64), *rep = NULL;
    TRY("msg", aims_msg_create(&rep));
    aims_tls_config *shared = mode == 1 ? cfg_for("client") : NULL;
    double *v = malloc(sizeof *v * (size_t)iters);
    size_t n = 0;
    for (long i = 0; i < iters + 1; i++) {
        aims_tls_config *cfg = mode == 2 ? cfg_for("client") : shared;
        aims_client *c = client_for(cfg);
        const double t0 = now_s();
        const aims_status rc = aims_client_call_addr(c, addr, "echo", "m", req, rep, 0);
        const double us = (now_s() - t0) * 1e6;
        if (rc != AIMS_OK) {
            g_conn_failed[mode]++;
        } else if (i > 0) { /* the first one fills the session cache */
            v[n++] = us;
        }
        aims_client_destroy(c);
        if (mode == 2) {
            aims_tls_config_destroy(cfg);
        }
    }
    const double p50 = n > 0 ? median_sort(v, n) : -1.0;
    free(v);
    aims_tls_config_destroy(shared);
    aims_msg_destroy(req);
    aims_msg_destroy(rep);
    return p50;
}

int main(int argc, char **argv)
{
    const long it_rt = argc > 1 ? atol(argv[1]) : 5000;
    const long it_mb = argc > 2 ? atol(argv[2]) : 200;
    const long it_conn = argc > 3 ? atol(argv[3]) : 200;
    if (it_rt < 1 || it_mb < 1 || it_conn < 1) {
        fprintf(stderr, "usage: bench_tls [ITERS_RT] [ITERS_MB] [ITERS_CONN]\n");
        return 2;
    }
    snprintf(g_pki, sizeof g_pki, "/tmp/bench-tls-XXXXXX");
    if (mkdtemp(g_pki) == NULL) {
        fprintf(stderr, "bench_tls: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    const char *src = getenv("AIMS_SOURCE_DIR");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "sh '%s/tests/support/mkcerts.sh' '%s'", src ? src : ".", g_pki);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_tls: mkcerts.sh failed (set AIMS_SOURCE_DIR)\n");
        return 1;
    }
    aims_node *n = NULL;
    aims_service *s = NULL;
    TRY("node", aims_node_create("bench-tls", &n));
    aims_tls_config *ncfg = cfg_for("node");
    TRY("node tls", aims_node_set_tls(n, ncfg));
    TRY("listen tcp", aims_node_listen(n, "tcp://127.0.0.1:0"));
    TRY("listen tls", aims_node_listen(n, "tls://127.0.0.1:0"));
    TRY("service", aims_service_add_handler(n, "echo", echo_fn, NULL, &s));
    TRY("inline", aims_service_set_param_i64(s, AIMS_SERVICE_INLINE, 1));
    TRY("start", aims_service_start(s));
    char tcp[128], tls[128];
    size_t len = 0;
    TRY("address", aims_node_get_address(n, 0, tcp, sizeof tcp, &len));
    TRY("address", aims_node_get_address(n, 1, tls, sizeof tls, &len));
    aims_tls_config *ccfg = cfg_for("client");

    const double rt_tcp = rt_p50(tcp, NULL, it_rt);
    const double rt_tls = rt_p50(tls, ccfg, it_rt);
    double mb_tcp = 0.0, mb_tls = 0.0;
    mb_rates(tcp, tls, ccfg, it_mb, &mb_tcp, &mb_tls);
    const double c_tcp = conn_p50(tcp, 0, it_conn);
    const double c_res = conn_p50(tls, 1, it_conn);
    const double c_full = conn_p50(tls, 2, it_conn);
    printf("{\"bench\": \"tls\", \"iters\": [%ld, %ld, %ld],\n", it_rt, it_mb, it_conn);
    printf(" \"P11a_rt64_p50_us\": {\"tcp\": %.1f, \"tls\": %.1f, \"tls_over_tcp\": %.3f},\n",
           rt_tcp, rt_tls, rt_tls / rt_tcp);
    printf(" \"P11b_1mib_bytes_per_s\": {\"tcp\": %.3e, \"tls\": %.3e, \"tls_over_tcp\": %.3f},\n",
           mb_tcp, mb_tls, mb_tls / mb_tcp);
    printf(" \"P11c_connect_first_call_p50_us\": {\"tcp\": %.1f, \"tls_resumed\": %.1f, "
           "\"tls_full\": %.1f},\n", c_tcp, c_res, c_full);
    printf(" \"P11c_failed_first_calls\": {\"tcp\": %ld, \"tls_resumed\": %ld, "
           "\"tls_full\": %ld}}\n", g_conn_failed[0], g_conn_failed[1], g_conn_failed[2]);
    aims_tls_config_destroy(ccfg);
    aims_node_destroy(n);
    aims_tls_config_destroy(ncfg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_pki);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_tls: could not remove %s\n", g_pki);
    }
    return 0;
}
