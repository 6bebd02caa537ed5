/*
 * etcd_gw.c -- a client of etcd's v3 JSON gateway over libcurl (see
 * aimsi_etcd.h for the protocol). Owns libcurl for the library.
 *
 * Unary calls share one curl easy handle per client under a mutex, so the
 * HTTP/1.1 connection to etcd is kept alive between heartbeats. A watch is
 * long-lived and gets its own easy handle, driven through a multi handle so
 * the caller's stop flag is looked at every 100 ms even when etcd is silent.
 * CURLOPT_NOSIGNAL everywhere: libcurl must not touch signals in a library
 * that runs threads.
 *
 * Replies are from the network: JSON is parsed with a length, every field is
 * looked up by name and type-checked by the caller's accessors, base64 is
 * decoded into fixed buffers with a capacity check.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "aimsi_etcd.h"

#define MAX_REPLY (16u << 20) /* a range of a big prefix stays well below */

struct aimsi_etcd {
    char ep[AIMSI_ETCD_MAX_ENDPOINTS][128]; /* "http://host:port" */
    size_t n_ep;
    _Atomic size_t cur; /* the endpoint that answered last */
    char prefix[AIMSI_URL_MAX + 3];
    char user[128], pass[128]; /* etcd auth (user:password@ in the URL) */
    int tls;                   /* https: any of the TLS options below was given */
    char cacert[AIMSI_URL_MAX], cert[AIMSI_URL_MAX], key[AIMSI_URL_MAX]; /* "" = unset */
    pthread_mutex_t lock;      /* guards easy and token */
    CURL *easy;
    char token[512]; /* simple or JWT token from auth/authenticate ("" = none yet) */
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    g_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* "cacert=F&cert=F&key=F" (etcdctl's names): TLS to etcd. Any of them turns
 * https on; cert and key go together. Unknown keys are refused, so a typo
 * never silently means "no TLS". */
static aims_status parse_query(aimsi_etcd *e, const char *q)
{
    while (*q != 0) {
        const char *amp = strchr(q, '&');
        const size_t len = amp != NULL ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        char *dst = NULL;
        if (eq != NULL) {
            const size_t klen = (size_t)(eq - q);
            dst = klen == 6 && strncmp(q, "cacert", 6) == 0 ? e->cacert
                  : klen == 4 && strncmp(q, "cert", 4) == 0 ? e->cert
                  : klen == 3 && strncmp(q, "key", 3) == 0  ? e->key
                                                            : NULL;
        }
        const size_t vlen = eq != NULL ? len - (size_t)(eq - q) - 1 : 0;
        if (dst == NULL || vlen == 0 || vlen >= AIMSI_URL_MAX) {
            return aimsi_err(NULL, AIMS_E_INVAL, "etcd url: option '%.*s' is not one of "
                             "cacert=FILE, cert=FILE, key=FILE", (int)len, q);
        }
        memcpy(dst, eq + 1, vlen);
        dst[vlen] = 0;
        e->tls = 1;
        q += len + (amp != NULL);
    }
    if ((e->cert[0] != 0) != (e->key[0] != 0)) {
        return aimsi_err(NULL, AIMS_E_INVAL, "etcd url: cert= and key= go together");
    }
    return AIMS_OK;
}

aims_status aimsi_etcd_create(const char *url, aimsi_etcd **out)
{
    if (strncmp(url, "etcd://", 7) != 0) {
        return aimsi_err(NULL, AIMS_E_INVAL, "etcd url '%s' must start with etcd://", url);
    }
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_rc != CURLE_OK) {
        return aimsi_err(NULL, AIMS_E_BACKEND, "etcd: curl_global_init failed: %s",
                         curl_easy_strerror(g_curl_rc));
    }
    aimsi_etcd *e = aimsi_calloc(1, sizeof(*e));
    if (e == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd: out of memory");
    }
    const char *p = url + 7;
    const char *query = strchr(p, '?');
    const char *path_end = query != NULL ? query : p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(path_end - p));
    const char *hosts_end = slash != NULL ? slash : path_end;
    if (query != NULL && parse_query(e, query + 1) != AIMS_OK) {
        aimsi_free(e);
        return AIMS_E_INVAL;
    }
    const char *at = NULL;
    for (const char *q = p; q < hosts_end; q++) {
        at = *q == '@' ? q : at;
    }
    if (at != NULL) {
        /* user:password@ -- etcd auth; the password may hold ':' but not '@'. */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const size_t ulen = colon != NULL ? (size_t)(colon - p) : 0;
        const size_t plen = colon != NULL ? (size_t)(at - colon - 1) : 0;
        if (colon == NULL || ulen == 0 || ulen >= sizeof(e->user) || plen >= sizeof(e->pass)) {
            aimsi_free(e);
            return aimsi_err(NULL, AIMS_E_INVAL, "etcd url: credentials must be "
                             "user:password@ (user 1..127 bytes)");
        }
        memcpy(e->user, p, ulen);
        memcpy(e->pass, colon + 1, plen);
        p = at + 1;
    }
    while (p < hosts_end) {
        const char *comma = memchr(p, ',', (size_t)(hosts_end - p));
        const char *end = comma != NULL ? comma : hosts_end;
        const size_t len = (size_t)(end - p);
        if (len == 0 || len > 100 || memchr(p, ':', len) == NULL ||
            e->n_ep == AIMSI_ETCD_MAX_ENDPOINTS) {
            aimsi_free(e);
            return aimsi_err(NULL, AIMS_E_INVAL, "etcd url '%s': endpoints must be 1..%d "
                             "host:port items separated by ','", url, AIMSI_ETCD_MAX_ENDPOINTS);
        }
        snprintf(e->ep[e->n_ep++], sizeof(e->ep[0]), "%s://%.*s", e->tls ? "https" : "http",
                 (int)len, p);
        p = comma != NULL ? comma + 1 : hosts_end;
    }
    const char *pre = slash != NULL && slash + 1 < path_end ? slash + 1 : "aims";
    size_t plen = slash != NULL && slash + 1 < path_end ? (size_t)(path_end - pre) : 4u;
    while (plen > 0 && pre[plen - 1] == '/') {
        plen--;
    }
    if (e->n_ep == 0 || plen == 0) {
        aimsi_free(e);
        return aimsi_err(NULL, AIMS_E_INVAL, "etcd url '%s': expected "
                         "etcd://host:port[,host:port...][/prefix]", url);
    }
    snprintf(e->prefix, sizeof(e->prefix), "/%.*s/", (int)plen, pre);
    if (pthread_mutex_init(&e->lock, NULL) != 0) {
        aimsi_free(e);
        return aimsi_err(NULL, AIMS_E_BACKEND, "etcd: pthread_mutex_init failed");
    }
    *out = e;
    return AIMS_OK;
}

void aimsi_etcd_destroy(aimsi_etcd *e)
{
    if (e == NULL) {
        return;
    }
    if (e->easy != NULL) {
        curl_easy_cleanup(e->easy);
    }
    pthread_mutex_destroy(&e->lock);
    aimsi_free(e);
}

const char *aimsi_etcd_prefix(const aimsi_etcd *e)
{
    return e->prefix;
}

/* ---- bodies ------------------------------------------------------------------------ */

typedef struct body_buf {
    char *data;
    size_t len, cap;
    int too_big;
} body_buf;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    body_buf *b = user;
    const size_t n = size * nmemb;
    if (b->len + n + 1 > MAX_REPLY) {
        b->too_big = 1;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *g = aimsi_realloc(b->data, cap);
        if (g == NULL) {
            return 0;
        }
        b->data = g;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = 0;
    return n;
}

/* gRPC error reply {"error"|"message": ..., "code": N} -> status. */
static aims_status grpc_error(const char *ep, const char *path, long http, const cJSON *j)
{
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (!cJSON_IsString(msg)) {
        msg = cJSON_GetObjectItemCaseSensitive(j, "error");
    }
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    const int c = cJSON_IsNumber(code) ? code->valueint : -1;
    return aimsi_err(NULL, c == 5 ? AIMS_E_NOTFOUND : AIMS_E_BACKEND,
                     "etcd %s/v3/%s: HTTP %ld: %s", ep, path, http,
                     cJSON_IsString(msg) ? msg->valuestring : "(no message)");
}

static void easy_common(const aimsi_etcd *e, CURL *h, const char *url, const char *json,
                        long timeout_ms)
{
    if (e->tls) {
        /* https only: a TLS URL must never fall back to plain text */
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        if (e->cacert[0] != 0) {
            curl_easy_setopt(h, CURLOPT_CAINFO, e->cacert);
        }
        if (e->cert[0] != 0) {
            curl_easy_setopt(h, CURLOPT_SSLCERT, e->cert);
            curl_easy_setopt(h, CURLOPT_SSLKEY, e->key);
        }
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 500L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    if (!e->tls) {
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    }
}

/* Content type, and the auth token when there is one (NULL on out-of-memory). */
static struct curl_slist *headers(const char *token)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (h != NULL && token[0] != 0) {
        char line[sizeof(((aimsi_etcd *)0)->token) + 32];
        snprintf(line, sizeof(line), "Authorization: %s", token);
        struct curl_slist *h2 = curl_slist_append(h, line);
        if (h2 == NULL) {
            curl_slist_free_all(h);
        }
        h = h2;
    }
    return h;
}

/* One request, endpoint after endpoint (under e->lock). */
static aims_status call_locked(aimsi_etcd *e, const char *path, const char *json, cJSON **out,
                               long timeout_ms)
{
    if (e->easy == NULL) {
        e->easy = curl_easy_init();
    }
    struct curl_slist *hdr = headers(e->token);
    if (e->easy == NULL || hdr == NULL) {
        curl_slist_free_all(hdr);
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd: curl_easy_init failed");
    }
    aims_status rc = AIMS_E_IO;
    const size_t first = atomic_load(&e->cur);
    for (size_t k = 0; k < e->n_ep; k++) {
        const size_t i = (first + k) % e->n_ep;
        char url[192];
        snprintf(url, sizeof(url), "%s/v3/%s", e->ep[i], path);
        body_buf b = {0};
        curl_easy_reset(e->easy);
        easy_common(e, e->easy, url, json, timeout_ms);
        curl_easy_setopt(e->easy, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(e->easy, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e->easy, CURLOPT_WRITEDATA, &b);
        const CURLcode cc = curl_easy_perform(e->easy);
        long http = 0;
        curl_easy_getinfo(e->easy, CURLINFO_RESPONSE_CODE, &http);
        if (cc != CURLE_OK) {
            rc = aimsi_err(NULL, b.too_big ? AIMS_E_RANGE : AIMS_E_IO, "etcd %s/v3/%s: %s",
                           e->ep[i], path, b.too_big ? "reply too big" : curl_easy_strerror(cc));
            aimsi_free(b.data);
            if (b.too_big) {
                break;
            }
            continue; /* next endpoint */
        }
        atomic_store(&e->cur, i);
        cJSON *j = b.data != NULL ? cJSON_ParseWithLength(b.data, b.len) : NULL;
        aimsi_free(b.data);
        if (j == NULL || !cJSON_IsObject(j)) {
            cJSON_Delete(j);
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "etcd %s/v3/%s: HTTP %ld, reply is not a "
                           "JSON object", e->ep[i], path, http);
            break;
        }
        if (http != 200) {
            rc = grpc_error(e->ep[i], path, http, j);
            cJSON_Delete(j);
            /* A member without a leader cannot serve: another one may. */
            if (http == 503) {
                continue;
            }
            break;
        }
        *out = j;
        rc = AIMS_OK;
        break;
    }
    curl_slist_free_all(hdr);
    return rc;
}

/* Trade user/password for a token (under e->lock). */
static aims_status authenticate(aimsi_etcd *e, long timeout_ms)
{
    cJSON *body = cJSON_CreateObject();
    char *json = NULL;
    if (body != NULL && cJSON_AddStringToObject(body, "name", e->user) != NULL &&
        cJSON_AddStringToObject(body, "password", e->pass) != NULL) {
        json = cJSON_PrintUnformatted(body);
    }
    cJSON_Delete(body);
    if (json == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd: out of memory");
    }
    e->token[0] = 0;
    cJSON *reply = NULL;
    aims_status rc = call_locked(e, "auth/authenticate", json, &reply, timeout_ms);
    cJSON_free(json);
    if (rc == AIMS_OK) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(reply, "token");
        if (cJSON_IsString(t) && t->valuestring[0] != 0 &&
            strlen(t->valuestring) < sizeof(e->token)) {
            strcpy(e->token, t->valuestring);
        } else {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "etcd auth/authenticate: no usable token");
        }
    } else {
        char why[256];
        snprintf(why, sizeof(why), "%s", aims_errmsg()); /* aimsi_err rewrites it */
        rc = aimsi_err(NULL, rc, "etcd: authentication as '%s' failed: %s", e->user, why);
    }
    cJSON_Delete(reply);
    return rc;
}

/* A token etcd no longer takes (expired simple token, restarted member). */
static int token_rejected(void)
{
    const char *m = aims_errmsg();
    return strstr(m, "invalid auth token") != NULL || strstr(m, "user name is empty") != NULL;
}

aims_status aimsi_etcd_call(aimsi_etcd *e, const char *path, const cJSON *body, cJSON **out,
                            long timeout_ms)
{
    char *json = cJSON_PrintUnformatted(body);
    if (json == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd: out of memory");
    }
    pthread_mutex_lock(&e->lock);
    aims_status rc = AIMS_OK;
    if (e->user[0] != 0 && e->token[0] == 0) {
        rc = authenticate(e, timeout_ms);
    }
    if (rc == AIMS_OK) {
        rc = call_locked(e, path, json, out, timeout_ms);
        if (rc == AIMS_E_BACKEND && e->user[0] != 0 && token_rejected()) {
            rc = authenticate(e, timeout_ms);
            if (rc == AIMS_OK) {
                rc = call_locked(e, path, json, out, timeout_ms);
            }
        }
    }
    pthread_mutex_unlock(&e->lock);
    cJSON_free(json);
    return rc;
}

/* ---- watch --------------------------------------------------------------------------- */

typedef struct watch_ctx {
    body_buf line;
    aimsi_etcd_on_result on_result;
    void *user;
    int done;    /* the callback asked to end */
    int corrupt; /* a line was not JSON */
} watch_ctx;

/* Split the stream on '\n' and hand each {"result": ...} to the callback. */
static size_t on_watch_bytes(char *ptr, size_t size, size_t nmemb, void *user)
{
    watch_ctx *w = user;
    const size_t n = size * nmemb;
    if (on_body(ptr, size, nmemb, &w->line) != n) {
        return 0;
    }
    for (;;) {
        char *nl = w->line.len > 0 ? memchr(w->line.data, '\n', w->line.len) : NULL;
        if (nl == NULL || w->done) {
            break;
        }
        const size_t len = (size_t)(nl - w->line.data);
        cJSON *j = cJSON_ParseWithLength(w->line.data, len);
        if (j == NULL) {
            w->corrupt = 1;
            return 0;
        }
        const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
        if (cJSON_IsObject(res) && w->on_result(w->user, res)) {
            w->done = 1;
        } else if (!cJSON_IsObject(res)) {
            w->corrupt = 1; /* an error object: the stream is over */
            cJSON_Delete(j);
            return 0;
        }
        cJSON_Delete(j);
        memmove(w->line.data, nl + 1, w->line.len - len - 1);
        w->line.len -= len + 1;
    }
    return w->done ? 0 : n;
}

aims_status aimsi_etcd_watch(aimsi_etcd *e, const char *key, const char *range_end,
                             int64_t start_revision, aimsi_etcd_on_result on_result, void *user,
                             const _Atomic int *stop)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *cr = cJSON_AddObjectToObject(body, "create_request");
    if (cr == NULL || !cJSON_AddItemToObject(cr, "key", aimsi_etcd_b64(key, strlen(key))) ||
        !cJSON_AddItemToObject(cr, "range_end", aimsi_etcd_b64(range_end, strlen(range_end))) ||
        !cJSON_AddItemToObject(cr, "start_revision", aimsi_etcd_i64_item(start_revision))) {
        cJSON_Delete(body);
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd watch: out of memory");
    }
    char *json = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (e->user[0] != 0) {
        /* Make sure there is a token (a cheap call authenticates when needed). */
        cJSON *probe = cJSON_CreateObject(), *reply = NULL;
        const aims_status arc =
            probe != NULL && cJSON_AddItemToObject(probe, "key", aimsi_etcd_b64(key, strlen(key)))
                ? aimsi_etcd_call(e, "kv/range", probe, &reply, 2000)
                : AIMS_E_NOMEM;
        cJSON_Delete(probe);
        cJSON_Delete(reply);
        if (arc != AIMS_OK) {
            cJSON_free(json);
            return arc;
        }
    }
    CURL *h = curl_easy_init();
    CURLM *m = curl_multi_init();
    pthread_mutex_lock(&e->lock);
    struct curl_slist *hdr = headers(e->token);
    pthread_mutex_unlock(&e->lock);
    if (json == NULL || h == NULL || m == NULL || hdr == NULL) {
        cJSON_free(json);
        curl_easy_cleanup(h);
        curl_multi_cleanup(m);
        curl_slist_free_all(hdr);
        return aimsi_err(NULL, AIMS_E_NOMEM, "etcd watch: out of memory");
    }
    const size_t i = atomic_load(&e->cur) % e->n_ep;
    char url[192];
    snprintf(url, sizeof(url), "%s/v3/watch", e->ep[i]);
    watch_ctx w = {.on_result = on_result, .user = user};
    easy_common(e, h, url, json, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_watch_bytes);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &w);
    curl_multi_add_handle(m, h);
    aims_status rc = AIMS_OK;
    int running = 1;
    while (running && !atomic_load(stop) && !w.done) {
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            break;
        }
        if (running) {
            curl_multi_poll(m, NULL, 0, 100, NULL);
        }
    }
    if (!atomic_load(stop) && !w.done) {
        /* The stream ended without being asked to: etcd went away (or sent
         * an error). Next time, start with the next endpoint. */
        CURLMsg *msg;
        int left;
        CURLcode cc = CURLE_OK;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE) {
                cc = msg->data.result;
            }
        }
        long http = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
        if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_OPERATION_TIMEDOUT || http != 200) {
            atomic_store(&e->cur, (i + 1) % e->n_ep);
        }
        rc = aimsi_err(NULL, AIMS_E_IO, "etcd watch at %s ended: %s (HTTP %ld)%s", e->ep[i],
                       curl_easy_strerror(cc), http, w.corrupt ? ", bad reply" : "");
    }
    curl_multi_remove_handle(m, h);
    curl_easy_cleanup(h);
    curl_multi_cleanup(m);
    curl_slist_free_all(hdr);
    cJSON_free(json);
    aimsi_free(w.line.data);
    return rc;
}

/* ---- fields -------------------------------------------------------------------------- */

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

cJSON *aimsi_etcd_b64(const char *s, size_t n)
{
    char *out = aimsi_malloc(4 * ((n + 2) / 3) + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        const uint32_t v = (uint32_t)(unsigned char)s[i] << 16 |
                           (i + 1 < n ? (uint32_t)(unsigned char)s[i + 1] << 8 : 0) |
                           (i + 2 < n ? (uint32_t)(unsigned char)s[i + 2] : 0);
        out[o++] = k_b64[v >> 18 & 63];
        out[o++] = k_b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? k_b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? k_b64[v & 63] : '=';
    }
    out[o] = 0;
    cJSON *item = cJSON_CreateString(out);
    aimsi_free(out);
    return item;
}

static int b64_val(char c)
{
    const char *p = c != 0 ? strchr(k_b64, c) : NULL;
    return p != NULL ? (int)(p - k_b64) : -1;
}

int aimsi_etcd_unb64(const char *in, char *out, size_t cap, size_t *n)
{
    const size_t len = strlen(in);
    if (len % 4 != 0) {
        return 0;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        const int a = b64_val(in[i]), b = b64_val(in[i + 1]);
        const int c = in[i + 2] == '=' ? 0 : b64_val(in[i + 2]);
        const int d = in[i + 3] == '=' ? 0 : b64_val(in[i + 3]);
        const int pad = (in[i + 2] == '=') + (in[i + 3] == '=');
        if (a < 0 || b < 0 || c < 0 || d < 0 || (pad > 0 && i + 4 != len) ||
            (in[i + 2] == '=' && in[i + 3] != '=')) {
            return 0;
        }
        const uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        const size_t k = 3u - (size_t)pad;
        if (o + k + 1 > cap) {
            return 0;
        }
        const unsigned char bytes[3] = {(unsigned char)(v >> 16), (unsigned char)(v >> 8),
                                        (unsigned char)v};
        memcpy(out + o, bytes, k);
        o += k;
    }
    out[o] = 0;
    *n = o;
    return 1;
}

int64_t aimsi_etcd_i64(const cJSON *obj, const char *name, int64_t def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsString(it)) {
        char *end = NULL;
        const long long v = strtoll(it->valuestring, &end, 10);
        return end != it->valuestring && *end == 0 ? (int64_t)v : def;
    }
    if (cJSON_IsNumber(it)) {
        return (int64_t)it->valuedouble;
    }
    return def;
}

cJSON *aimsi_etcd_i64_item(int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    return cJSON_CreateString(buf);
}
