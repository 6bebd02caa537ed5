/*
 * etcd_proc.c -- see etcd_proc.h. Plain POSIX: fork/exec, a socket probe for
 * /health, no library of ours, so unit and integration tests can both use it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "etcd_proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *etcd_bin(void)
{
    const char *b = getenv("ETCD");
    return b != NULL && b[0] != 0 ? b : "etcd";
}

int etcd_available(void)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", etcd_bin());
    return system(cmd) == 0;
}

int etcd_free_port(void)
{
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* /health over https with the client certificate (curl, the real client). */
static int healthy_tls(const etcd_cluster *c, int i)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "curl -s -m 1 --cacert '%s/ca.pem' --cert '%s/client.pem' "
             "--key '%s/client.key' https://127.0.0.1:%d/health 2>/dev/null | "
             "grep -q '\"health\":\"true\"'", c->tls, c->tls, c->tls, c->m[i].client_port);
    return system(cmd) == 0;
}

int etcd_make_pki(const char *pki)
{
    const char *src = getenv("AIMS_SOURCE_DIR");
    char cmd[2048];
    /* the CA and client certificates of the tls:// tests, plus a server
     * certificate for etcd that is also a client one (etcd's gRPC gateway
     * dials its own TLS port with it when --client-cert-auth is on) */
    snprintf(cmd, sizeof(cmd),
             "set -e; sh '%s/tests/support/mkcerts.sh' '%s' && cd '%s' && "
             "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout etcd.key -out etcd.csr -subj /CN=etcd.aims 2>/dev/null && "
             "printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
             "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,"
             "IP:127.0.0.1\n' > etcd.ext && "
             "openssl x509 -req -in etcd.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out etcd.pem -days 30 -extfile etcd.ext 2>/dev/null && "
             /* libaims' client certificate: no CN (with auth on, etcd 3.4's
              * gateway refuses requests whose client certificate has a CN) */
             "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout gw.key -out gw.csr -subj '/O=aims client' 2>/dev/null && "
             "printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
             "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:client.aims\n' > gw.ext && "
             "openssl x509 -req -in gw.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out gw.pem -days 30 -extfile gw.ext 2>/dev/null",
             src != NULL ? src : ".", pki, pki);
    return system(cmd) == 0 ? 0 : -1;
}

int etcd_member_healthy(const etcd_cluster *c, int i)
{
    if (c->tls[0] != 0) {
        return healthy_tls(c, i);
    }
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return 0;
    }
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->m[i].client_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        const char req[] = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if (write(fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1)) {
            char buf[2048];
            size_t n = 0;
            ssize_t k;
            while (n < sizeof(buf) - 1 && (k = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0) {
                n += (size_t)k;
            }
            buf[n] = 0;
            ok = strstr(buf, "\"health\":\"true\"") != NULL;
        }
    }
    close(fd);
    return ok;
}

static int spawn(etcd_cluster *c, int i)
{
    etcd_member *m = &c->m[i];
    char curl[64], purl[64], cluster[512] = "", log[340];
    char cert[240], key[240], ca[240];
    snprintf(curl, sizeof(curl), "%s://127.0.0.1:%d", c->tls[0] ? "https" : "http",
             m->client_port);
    snprintf(cert, sizeof(cert), "%s/etcd.pem", c->tls);
    snprintf(key, sizeof(key), "%s/etcd.key", c->tls);
    snprintf(ca, sizeof(ca), "%s/ca.pem", c->tls);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", m->peer_port);
    for (int k = 0; k < c->n; k++) {
        char one[64];
        snprintf(one, sizeof(one), "%s%s=http://127.0.0.1:%d", k ? "," : "", c->m[k].name,
                 c->m[k].peer_port);
        strcat(cluster, one);
    }
    snprintf(log, sizeof(log), "%s.log", m->dir);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        const int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (c->tls[0] != 0) {
            execlp(etcd_bin(), etcd_bin(), "--name", m->name, "--data-dir", m->dir,
                   "--unsafe-no-fsync", "--listen-client-urls", curl, "--advertise-client-urls",
                   curl, "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                   "--initial-cluster", cluster, "--initial-cluster-state", "new",
                   "--initial-cluster-token", c->base, "--cert-file", cert, "--key-file", key,
                   "--trusted-ca-file", ca, "--client-cert-auth", (char *)NULL);
        }
        execlp(etcd_bin(), etcd_bin(), "--name", m->name, "--data-dir", m->dir,
               "--unsafe-no-fsync", "--listen-client-urls", curl, "--advertise-client-urls",
               curl, "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
               "--initial-cluster", cluster, "--initial-cluster-state", "new",
               "--initial-cluster-token", c->base, (char *)NULL);
        _exit(127);
    }
    m->pid = pid;
    return 0;
}

static int wait_healthy(etcd_cluster *c, int i, int timeout_ms)
{
    for (int t = 0; t < timeout_ms; t += 50) {
        if (etcd_member_healthy(c, i)) {
            return 0;
        }
        int st;
        if (c->m[i].pid > 0 && waitpid(c->m[i].pid, &st, WNOHANG) == c->m[i].pid) {
            c->m[i].pid = 0;
            fprintf(stderr, "# etcd member %d exited (see %s.log)\n", i, c->m[i].dir);
            return -1;
        }
        sleep_ms(50);
    }
    fprintf(stderr, "# etcd member %d not healthy after %d ms (see %s.log)\n", i, timeout_ms,
            c->m[i].dir);
    return -1;
}

static int cluster_start(etcd_cluster *c, int n);

int etcd_cluster_start(etcd_cluster *c, int n)
{
    memset(c, 0, sizeof(*c));
    return cluster_start(c, n);
}

int etcd_cluster_start_tls(etcd_cluster *c, int n, const char *pki)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->tls, sizeof(c->tls), "%s", pki);
    return cluster_start(c, n);
}

/* A port probed free now that no member of c has yet (two probes can draw
 * the same port once the first probe's socket is closed). */
static int fresh_port(const etcd_cluster *c)
{
    for (;;) {
        const int p = etcd_free_port();
        int taken = 0;
        for (int i = 0; i < c->n; i++) {
            taken |= p == c->m[i].client_port || p == c->m[i].peer_port;
        }
        if (p < 0 || !taken) {
            return p;
        }
    }
}

/* Whether member i exited because a port it was given was bound by another
 * socket between the probe and etcd's bind (its log says so). */
static int lost_port(const etcd_cluster *c, int i)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "grep -qs 'address already in use' '%s.log'", c->m[i].dir);
    return c->m[i].pid == 0 && system(cmd) == 0;
}

/* Start every member on fresh ports and data dirs (round r names the dirs):
 * 0 all healthy, 1 a member lost a port (try again), -1 any other failure. */
static int start_members(etcd_cluster *c, int r)
{
    c->endpoints[0] = 0;
    for (int i = 0; i < c->n; i++) {
        c->m[i].client_port = c->m[i].peer_port = 0;
    }
    for (int i = 0; i < c->n; i++) {
        etcd_member *m = &c->m[i];
        snprintf(m->name, sizeof(m->name), "m%d", i);
        snprintf(m->dir, sizeof(m->dir), r == 0 ? "%s/%s" : "%s/%s.%d", c->base, m->name, r);
        m->client_port = fresh_port(c);
        m->peer_port = fresh_port(c);
        char one[40];
        snprintf(one, sizeof(one), "%s127.0.0.1:%d", i ? "," : "", m->client_port);
        strcat(c->endpoints, one);
    }
    for (int i = 0; i < c->n; i++) {
        if (spawn(c, i) != 0) {
            return -1;
        }
    }
    for (int i = 0; i < c->n; i++) {
        if (wait_healthy(c, i, 20000) != 0) {
            return lost_port(c, i) ? 1 : -1;
        }
    }
    return 0;
}

static int cluster_start(etcd_cluster *c, int n)
{
    if (n < 1 || n > ETCD_MAX_MEMBERS) {
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(c->base, sizeof(c->base), "%s/aims-etcd-XXXXXX", tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(c->base) == NULL) {
        return -1;
    }
    c->n = n;
    /* etcd takes its ports as numbers, so they are probed free first; another
     * socket (any connection's ephemeral port) can bind one before etcd does,
     * and that member exits. Only that start is tried again, on fresh ports;
     * any other failure fails. */
    for (int r = 0; r < 3; r++) {
        const int rc = start_members(c, r);
        if (rc == 0) {
            return 0;
        }
        for (int i = 0; i < n; i++) {
            etcd_member_stop(c, i, SIGKILL);
        }
        if (rc < 0) {
            break;
        }
        fprintf(stderr, "# etcd: a probed port was taken before etcd bound it; fresh ports\n");
    }
    etcd_cluster_stop(c);
    return -1;
}

void etcd_member_stop(etcd_cluster *c, int i, int sig)
{
    if (c->m[i].pid > 0) {
        kill(c->m[i].pid, sig);
        int st;
        while (waitpid(c->m[i].pid, &st, 0) < 0 && errno == EINTR) {
        }
        c->m[i].pid = 0;
    }
}

int etcd_member_start(etcd_cluster *c, int i)
{
    return c->m[i].pid > 0 ? -1 : spawn(c, i);
}

int etcd_member_wait(etcd_cluster *c, int i, int timeout_ms)
{
    return wait_healthy(c, i, timeout_ms);
}

int etcd_member_restart(etcd_cluster *c, int i)
{
    if (etcd_member_start(c, i) != 0) {
        return -1;
    }
    return wait_healthy(c, i, 20000);
}

int etcd_leader(const etcd_cluster *c)
{
    /* `etcdctl endpoint status` of each member: the member whose own id is
     * the leader id it reports. */
    for (int i = 0; i < c->n; i++) {
        if (c->m[i].pid <= 0) {
            continue;
        }
        char cmd[256], out[4096];
        snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:%d endpoint "
                 "status -w json 2>/dev/null", c->m[i].client_port);
        FILE *p = popen(cmd, "r");
        if (p == NULL) {
            continue;
        }
        const size_t n = fread(out, 1, sizeof(out) - 1, p);
        pclose(p);
        out[n] = 0;
        const char *mid = strstr(out, "\"member_id\":");
        const char *lid = strstr(out, "\"leader\":");
        if (mid != NULL && lid != NULL &&
            strtoull(mid + 12, NULL, 10) == strtoull(lid + 9, NULL, 10)) {
            return i;
        }
    }
    return -1;
}

void etcd_cluster_stop(etcd_cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        etcd_member_stop(c, i, SIGKILL);
    }
    if (c->base[0] != 0) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->base);
        if (system(cmd) != 0) {
            fprintf(stderr, "# could not remove %s\n", c->base);
        }
        c->base[0] = 0;
    }
    c->n = 0;
}

int etcd_ctl(const etcd_cluster *c, const char *args)
{
    char tls[700] = "";
    if (c->tls[0] != 0) {
        snprintf(tls, sizeof(tls), "--cacert '%s/ca.pem' --cert '%s/client.pem' --key "
                 "'%s/client.key' ", c->tls, c->tls, c->tls);
    }
    char cmd[2048];
    /* generous timeouts: with auth on, every command pays a bcrypt check, and a
     * loaded test machine must not turn that into a failed command */
    snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl %s--dial-timeout=10s --command-timeout=30s "
             "--endpoints=%s %s >/dev/null 2>&1", tls, c->endpoints, args);
    const int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int etcd_test_start(etcd_cluster *c, char *pki, size_t cap)
{
    memset(c, 0, sizeof(*c));
    if (!etcd_available()) {
        printf("# no etcd binary (Debian etcd-server): skipped\n");
        return 77;
    }
    if (pki == NULL) {
        return etcd_cluster_start(c, 1) == 0 ? 0 : 1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(pki, cap, "%s/aims-etcd-pki-XXXXXX", tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(pki) == NULL || etcd_make_pki(pki) != 0) {
        fprintf(stderr, "# cannot make the test PKI in %s (openssl CLI)\n", pki);
        return 1;
    }
    return etcd_cluster_start_tls(c, 1, pki) == 0 ? 0 : 1;
}

void etcd_test_stop(etcd_cluster *c, const char *pki)
{
    etcd_cluster_stop(c);
    if (pki != NULL && pki[0] != 0) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pki);
        if (system(cmd) != 0) {
            fprintf(stderr, "# could not remove %s\n", pki);
        }
    }
}
