/*
 * https_itest.c -- the HTTPS front-door integration rig (see https_itest.h).
 *
 * Moved out of test_https.c and test_https_mtls.c, whose main() began and
 * ended with the same ~40 lines: the build probe (aims_http_create and
 * aims_tls_config_create answer AIMS_E_UNSUPPORTED in a build without the
 * feature), mkcerts.sh, the key, policy and bundle files, the port, and the
 * check script's run followed by the daemon's clean SIGTERM exit.
 */
#include "https_itest.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <aims/aims.h>

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    IT_CHECK(f != NULL && fputs(text, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

int https_rig_start(https_rig *r, const char *policy_text)
{
    {
        aims_http *h = NULL;
        aims_tls_config *t = NULL;
        const aims_status hs = aims_http_create(NULL, &h);
        const aims_status ts = aims_tls_config_create(&t);
        aims_tls_config_destroy(t);
        if (hs == AIMS_E_UNSUPPORTED || ts == AIMS_E_UNSUPPORTED) {
            it_log("built without HTTP or TLS: skipped");
            return 0;
        }
    }
    memset(r, 0, sizeof *r);
    const char *src = getenv("AIMS_SOURCE_DIR");
    char cmd[1600], bundle[300], pipeline[300], key[320];
    snprintf(r->pki, sizeof r->pki, "%s/pki", it_dir());
    snprintf(cmd, sizeof cmd, "sh '%s/tests/support/mkcerts.sh' '%s'", src ? src : ".", r->pki);
    IT_CHECK(system(cmd) == 0, "mkcerts.sh failed (openssl CLI missing? AIMS_SOURCE_DIR?)");
    snprintf(r->ca, sizeof r->ca, "%s/ca.pem", r->pki);
    snprintf(r->cert, sizeof r->cert, "%s/node.pem", r->pki);
    snprintf(r->nkey, sizeof r->nkey, "%s/node.key", r->pki);
    snprintf(key, sizeof key, "%s/hs256.key", r->pki);
    write_file(key, "https test key: at least thirty-two bytes long\n");
    snprintf(r->policy, sizeof r->policy, "%s/node.policy", r->pki);
    write_file(r->policy, policy_text);
    snprintf(bundle, sizeof bundle, "%s/clf.bundle", it_dir());
    snprintf(pipeline, sizeof pipeline, "%s/clf.pipeline", it_dir());
    snprintf(r->a1, sizeof r->a1, "clf@1=%s", bundle);
    it_make_bundle(bundle, pipeline);
    snprintf(r->http, sizeof r->http, "127.0.0.1:0"); /* the daemon says its port */
    return 1;
}

void https_rig_check(const https_rig *r, it_proc *d, const char *script)
{
    char cmd[1600];
    it_log("daemon %s, https on %s", d->addr, d->http);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %s", script, d->http, r->pki);
    it_log("running %s", cmd);
    const int rc = system(cmd);
    IT_CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "%s failed (%d)", script, rc);
    it_signal(d, SIGTERM);
    const int st = it_wait_exit(d, 20000);
    IT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %d", st);
}
