/*
 * https_itest.h -- what the HTTPS front-door integration tests share
 * (test_https.c, test_https_mtls.c).
 *
 * Both make a throw-away PKI with tests/support/mkcerts.sh (the openssl CLI;
 * nothing is committed), an HS256 key and a policy file next to it, the test
 * bundle as clf@1, and --http on loopback port 0; both then spawn one
 * aims_node with their own TLS/policy flags, run a Python check script of
 * real clients (curl, requests, openssl s_client, Chromium) against the URL
 * of the daemon's "http" line with the PKI folder, and stop the daemon with SIGTERM,
 * which must exit 0. Only the policy text and the daemon's flags differ.
 */
#ifndef HTTPS_ITEST_H
#define HTTPS_ITEST_H

#include "itest.h"

typedef struct https_rig {
    char pki[300];    /* mkcerts.sh's output folder, it_dir()/pki */
    char ca[320];     /* the test CA (pki/ca.pem) */
    char cert[320];   /* the node's certificate (pki/node.pem) */
    char nkey[320];   /* the node's key (pki/node.key) */
    char policy[320]; /* pki/node.policy, written from the caller's text */
    char a1[320];     /* "clf@1=<bundle>", for --infer */
    char http[64];    /* "127.0.0.1:0", for --http (it_proc.http: the port taken) */
} https_rig;

/* After it_init(): 0 (logged "skipped") when libaims was built without HTTP
 * or TLS -- the test then returns 77. Else 1 with r filled in: the PKI, the
 * HS256 key pki/hs256.key, the policy (policy_text) and the bundle made. */
int https_rig_start(https_rig *r, const char *policy_text);

/* Run `python3 script <d->http> <r->pki>` (it must exit 0), then
 * SIGTERM the daemon d (it must exit 0). */
void https_rig_check(const https_rig *r, it_proc *d, const char *script);

#endif /* HTTPS_ITEST_H */
