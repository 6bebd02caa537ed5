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
} etcd_cluster;

/* A loopback TCP port nothing listens on right now. */
int etcd_free_port(void);
/* 1 when an etcd binary is available. */
int etcd_available(void);
/* Start n (1..3) members; 0 on success (ready), -1 on failure (message on stderr). */
int etcd_cluster_start(etcd_cluster *c, int n);
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
