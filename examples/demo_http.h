/*
 * demo_http.h -- aims_demo's check of the HTTP front door (issue 12).
 *
 * Why: the demo shows the cluster answering the way an outside program sees
 * it, so it calls the front door with plain HTTP/1.1 over a socket (no
 * libaims client code): GET /v2/health/ready, one KServe v2 JSON infer of a
 * test row, GET /metrics. The caller compares the class with the native
 * client's for the same row.
 */
#ifndef AIMS_DEMO_HTTP_H
#define AIMS_DEMO_HTTP_H

#include <stddef.h>

typedef struct demo_http_result {
    int ready_status;     /* HTTP status of GET /v2/health/ready */
    int infer_status;     /* HTTP status of POST .../infer */
    int infer_class;      /* class the HTTP reply gave (-1 when none) */
    double infer_us;      /* wall time of the infer request (new connection included) */
    int metrics_status;   /* HTTP status of GET /metrics */
    size_t metrics_bytes; /* size of the scrape */
    int metrics_has_model; /* the scrape names the model */
} demo_http_result;

/* For an "https://" url: trust this CA file (the requests then go through the
 * curl command line, since the demo links no TLS library of its own). */
void demo_http_set_ca(const char *ca_file);

/* Run the three requests against `url` ("http(s)://127.0.0.1:PORT") for model
 * `model` version `version` with one row of `cols` floats. Returns 0 when
 * every request got an answer (whatever its status), 1 on a socket error. */
int demo_http_check(const char *url, const char *model, const char *version, const float *row,
                    size_t cols, demo_http_result *r);

#endif
