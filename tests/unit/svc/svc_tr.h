/*
 * svc_tr.h -- the transport under test, for the svc tests that run once per
 * transport (meson passes inproc, ipc or tcp as argv[1]): main()'s check of
 * that argument and the listen URL of a node on it. Included by svc_echo.h;
 * tests that do not use the echo service (test_optimize.c,
 * test_lifecycle.c) include it alone. Header-only, `static inline`.
 */
#ifndef SVC_TR_H
#define SVC_TR_H

#include <stdio.h>
#include <string.h>

/* main()'s transport argument: argv[1] (when given) into *tr, which must be
 * one of the '|'-separated names in `allowed` ("inproc|ipc|tcp"). 0 when it
 * is, else 2 after a usage line on stderr (main returns it). */
static inline int svc_transport_arg(int argc, char **argv, const char **tr, const char *allowed)
{
    if (argc > 1) {
        *tr = argv[1];
    }
    const size_t n = strlen(*tr);
    const char *p = allowed;
    while (p != NULL && n > 0) {
        if (strncmp(p, *tr, n) == 0 && (p[n] == '|' || p[n] == '\0')) {
            return 0;
        }
        p = strchr(p, '|');
        if (p != NULL) {
            p++;
        }
    }
    fprintf(stderr, "usage: %s %s\n", argv[0], allowed);
    return 2;
}

/* Where a node called name listens on transport tr: inproc://name,
 * ipc://dir/name.sock (dir NULL: "."), or (tcp) an ephemeral port on
 * 127.0.0.1. */
static inline void svc_listen_url(char *url, size_t cap, const char *tr, const char *dir,
                                  const char *name)
{
    if (strcmp(tr, "inproc") == 0) {
        snprintf(url, cap, "inproc://%s", name);
    } else if (strcmp(tr, "ipc") == 0) {
        snprintf(url, cap, "ipc://%s/%s.sock", dir != NULL ? dir : ".", name);
    } else {
        snprintf(url, cap, "tcp://127.0.0.1:0");
    }
}

#endif /* SVC_TR_H */
