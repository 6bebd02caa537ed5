/*
 * aimsi_etcd.h -- a small client of etcd's v3 JSON gateway (etcd_gw.c), for
 * the etcd registry backend (etcd.c) and the tests. The only place besides
 * etcd.c that sees libcurl or cJSON.
 *
 * etcd's gateway speaks JSON over HTTP/1.1 POST at /v3/<service>/<method>
 * (etcd 3.4: /v3/kv/range, /v3/lease/grant, /v3/watch, ...): keys and values
 * are base64, 64-bit integers are JSON strings, and streaming methods (watch,
 * lease keepalive) answer with newline-separated {"result": ...} objects.
 *
 * Endpoints: a client holds every endpoint of the URL and sends each request
 * to the last one that answered; a transport failure moves to the next (so a
 * dead member of a cluster costs one failed connect, not an outage).
 */
#ifndef AIMSI_ETCD_H
#define AIMSI_ETCD_H

#include <cjson/cJSON.h>

#include "aimsi_regbk.h"

#define AIMSI_ETCD_MAX_ENDPOINTS 8

typedef struct aimsi_etcd aimsi_etcd;

/* Parse etcd://[user:password@]host:port[,host:port...][/prefix] (prefix
 * default "aims") and make a client. With credentials, the first request
 * authenticates and every request carries the token (re-authenticating once
 * when etcd rejects it). AIMS_E_INVAL names what is wrong with the URL. */
aims_status aimsi_etcd_create(const char *url, aimsi_etcd **out);
void aimsi_etcd_destroy(aimsi_etcd *e);
/* "/<prefix>/": every key the backend writes starts with it. */
const char *aimsi_etcd_prefix(const aimsi_etcd *e);

/* POST body (borrowed) to /v3/<path>; on AIMS_OK *out is the parsed reply
 * (cJSON_Delete it). A gRPC error reply gives AIMS_E_BACKEND with etcd's
 * message, or AIMS_E_NOTFOUND for gRPC code 5 (NotFound). Unreachable
 * endpoints give AIMS_E_IO after trying each once. Thread-safe. */
aims_status aimsi_etcd_call(aimsi_etcd *e, const char *path, const cJSON *body, cJSON **out,
                            long timeout_ms);

/* Stream /v3/watch for [key, range_end) from start_revision: on_result is
 * called with each "result" object in order; returning nonzero ends the
 * watch (AIMS_OK). Also ends when *stop becomes nonzero (checked at least
 * every 100 ms; AIMS_OK) or the stream breaks (AIMS_E_IO). */
typedef int (*aimsi_etcd_on_result)(void *user, const cJSON *result);
aims_status aimsi_etcd_watch(aimsi_etcd *e, const char *key, const char *range_end,
                             int64_t start_revision, aimsi_etcd_on_result on_result, void *user,
                             const _Atomic int *stop);

/* Publish name@version exactly once (etcd_pub.c): one txn on
 * <prefix>pub/<name>/<version> comparing create_revision == 0. Arguments
 * already checked (aimsi_pub_check); AIMS_OK for the winner, AIMS_E_EXISTS
 * "... already published by OWNER" otherwise. */
aims_status aimsi_etcd_publish(aimsi_etcd *e, const char *name, const char *version,
                               const char *owner, const char *meta);

/* Base64 of n bytes as a new JSON string item (NULL on out-of-memory). */
cJSON *aimsi_etcd_b64(const char *s, size_t n);
/* Decode base64 text into out (cap bytes, NUL-terminated); 0 when the
 * input is not base64 or does not fit. */
int aimsi_etcd_unb64(const char *in, char *out, size_t cap, size_t *n);
/* A 64-bit field (JSON string or number) of obj, or def when absent. */
int64_t aimsi_etcd_i64(const cJSON *obj, const char *name, int64_t def);
/* A JSON string of a 64-bit integer, as etcd wants them. */
cJSON *aimsi_etcd_i64_item(int64_t v);

#endif
