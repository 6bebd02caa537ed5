/*
 * demo_tls.h -- aims_demo --processes over tls:// (issue 10): a throw-away
 * PKI and policy made at start with the openssl CLI.
 *
 * Why: the demo is what a new user runs first; its multi-process mode should
 * look like a real deployment across hosts -- every node on tls:// with
 * mutual TLS 1.3, the registry and services under a policy -- and show how
 * little it takes. No key material is shipped: the CA lives in the demo's
 * temporary directory and is deleted with it.
 */
#ifndef AIMS_DEMO_TLS_H
#define AIMS_DEMO_TLS_H

#include <limits.h>

typedef struct demo_tls {
    char dir[PATH_MAX - 32];              /* DIR/pki (room for the file names below) */
    char ca[PATH_MAX];                    /* ca.pem */
    char node_cert[PATH_MAX], node_key[PATH_MAX];     /* node.demo: every node */
    char client_cert[PATH_MAX], client_key[PATH_MAX]; /* demo-client: this program */
    char policy[PATH_MAX];                /* node.policy */
} demo_tls;

/* Make DIR/pki: a CA, one node certificate (SAN DNS:node.demo, IP:127.0.0.1;
 * serverAuth + clientAuth: a node serves and dials), one client certificate
 * (DNS:demo-client) and the policy every node enforces. 0 on success; 1 with
 * a message on stderr (e.g. no openssl CLI). */
int demo_tls_make(const char *dir, demo_tls *t);

#endif
