/*
 * etcd_proc.h -- a real etcd (Debian etcd-server) for the tests.
 *
 * Starts `etcd` as a child on free loopback ports with a fresh data dir
 * (--unsafe-no-fsync: tests need no durability across power loss), waits
 * until it answers /health, and stops it (SIGKILL or SIGTERM) on demand or at
 * exit. The child gets PR_SET_PDEATHSIG(SIGKILL), so a crashed test leaves no
 * etcd behind. A member can be stopped and started again on the same ports
 * and data dir (fault tests). Several members form one cluster when started
 * with etcd_cluster_start.
 *
 * Tests skip (exit 77) when no etcd binary is installed: $ETCD overrides the
 * path, else `etcd` on $PATH.
 */
#ifndef ETCD_PROC_H
#define ETCD_PROC_H

#include <sys/types.h>

#define ETCD_MAX_MEMBERS 3

typedef struct etcd_member {
    pid_t pid;
    int client_port, peer_port;
    char name[16];
    char dir[320];
} etcd_member;

typedef struct etcd_cluster {
    etcd_member m[ETCD_MAX_MEMBERS];
    int n;
    char base[256];       /* mkdtemp directory holding every member's data */
    char endpoints[256];  /* "127.0.0.1:p1,127.0.0.1:p2,..." */
    char tls[200];        /* "" or a directory with ca.pem, etcd.pem/.key, client.pem/.key:
                           * the members serve https with --client-cert-auth */
} etcd_cluster;

/* A loopback TCP port nothing listens on right now. */
int etcd_free_port(void);
/* 1 when an etcd binary is available. */
int etcd_available(void);
/* Start n (1..3) members; 0 on success (ready), -1 on failure (message on stderr). */
int etcd_cluster_start(etcd_cluster *c, int n);
/* The same over TLS: https client URLs, server certificate pki/etcd.pem,
 * clients must present a certificate signed by pki/ca.pem (--client-cert-auth):
 * pki/gw.pem + gw.key for libaims (no CN: see docs/ETCD.md), pki/client.pem
 * for etcdctl and curl.
 * etcd_make_pki makes such a directory with the openssl CLI (0 on success). */
int etcd_make_pki(const char *pki);
int etcd_cluster_start_tls(etcd_cluster *c, int n, const char *pki);
/* For a test's main: start a 1-member etcd (over TLS when pki is not NULL:
 * a fresh PKI is made in a new temporary directory whose path is written to
 * pki[cap]). 0 when it is up; otherwise the exit code, with the reason
 * printed: 77 no etcd binary (skip), 1 it did not start. etcd_test_stop stops
 * it and removes the PKI (pki may be NULL). */
int etcd_test_start(etcd_cluster *c, char *pki, size_t cap);
void etcd_test_stop(etcd_cluster *c, const char *pki);
/* Kill member i with sig and reap it. */
void etcd_member_stop(etcd_cluster *c, int i, int sig);
/* Start member i again (same ports and data); 0 when it answers /health. */
int etcd_member_restart(etcd_cluster *c, int i);
/* Start member i again without waiting (a cluster needs a quorum before
 * any member is healthy), and wait for it. */
int etcd_member_start(etcd_cluster *c, int i);
int etcd_member_wait(etcd_cluster *c, int i, int timeout_ms);
/* The index of the current leader (etcdctl endpoint status), or -1. */
int etcd_leader(const etcd_cluster *c);
/* Whether member i answers /health with "true". */
int etcd_member_healthy(const etcd_cluster *c, int i);
/* Stop every member and remove the data. */
void etcd_cluster_stop(etcd_cluster *c);
/* Run `etcdctl --endpoints=... args...` (a shell fragment); its exit status. */
int etcd_ctl(const etcd_cluster *c, const char *args);

#endif
