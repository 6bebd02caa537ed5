/*
 * cli_call.c -- `aims call URL SERVICE METHOD`: a libaims client from the shell.
 *
 * The request is built from one of: a JSON object (--json FILE, or stdin when
 * it is not a terminal), one CSV row (--csv FILE --row N), or a text
 * (--text STRING, the "text" tensor infer services take). JSON values map to
 * tensors as follows (docs/WIRE.md has the tensor model):
 *
 *   "x": [[1, 2], [3, 4]]      nested numbers -> f32, shape from the nesting
 *   "text": "a b c"            a string       -> bytes (UTF-8)
 *   "k": {"dtype": "i32", "shape": [2], "data": [1, 2]}   explicit dtype/shape
 *
 * The reply is printed as one JSON object on stdout:
 *   {"service":...,"method":...,"tensors":{"y":{"dtype":"f32","shape":[1,3],"data":[...]}}}
 * with bytes tensors as JSON strings. URL is a node address (tcp://, ipc://)
 * called directly; with --registry, URL is a registry (aims_client_join's
 * schemes) and SERVICE is resolved and balanced by name like any client does.
 *
 * Exit status: 0; 1 when the call fails (the status name and the client's
 * and the reply's messages on stderr); 2 on a usage error (bad flags, a
 * request that does not parse: the offending byte offset or CSV line).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aims/aims.h>

#include "cli_json.h"
#include "cli_tools.h"

typedef struct call_opts {
    const char *url, *service, *method;
    const char *json, *csv, *text, *name;
    int64_t row, label_column, timeout_ms;
    int registry, header;
} call_opts;

static int call_usage(const char *msg)
{
    if (msg != NULL) {
        fprintf(stderr, "aims call: %s\n", msg);
    }
    fprintf(stderr, "usage: aims call URL SERVICE METHOD [--json FILE|-] [--csv FILE [--row N]\n"
                    "                 [--header 0|1] [--label-column N] [--name NAME]]\n"
                    "                 [--text STRING] [--registry] [--timeout MS]\n");
    return CLI_EXIT_USAGE;
}

/* ---- building the request ---------------------------------------------------------- */

static int dtype_by_name(const char *s, aims_dtype *out)
{
    static const struct {
        const char *name;
        aims_dtype dt;
    } k[] = {{"f32", AIMS_DT_F32}, {"i32", AIMS_DT_I32}, {"u8", AIMS_DT_U8},
             {"i64", AIMS_DT_I64}, {"bytes", AIMS_DT_BYTES}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (strcmp(s, k[i].name) == 0) {
            *out = k[i].dt;
            return 0;
        }
    }
    return -1;
}

static const char *dtype_name(aims_dtype dt)
{
    switch (dt) {
    case AIMS_DT_F32: return "f32";
    case AIMS_DT_I32: return "i32";
    case AIMS_DT_U8: return "u8";
    case AIMS_DT_I64: return "i64";
    case AIMS_DT_BYTES: return "bytes";
    }
    return "?";
}

/* Shape of a nested array of numbers (rectangular), or -1. */
static int nested_shape(const cj *v, uint64_t *dims, size_t *ndim)
{
    size_t n = 0;
    const cj *p = v;
    while (p->kind == CJ_ARR) {
        if (n == AIMS_MSG_MAX_NDIM) {
            return -1;
        }
        dims[n++] = p->len;
        if (p->len == 0) {
            break;
        }
        p = p->child;
    }
    *ndim = n;
    return 0;
}

/* Flatten @p v (shape dims[0..ndim)) into doubles; -1 when ragged or not numeric. */
static int flatten(const cj *v, const uint64_t *dims, size_t ndim, double *out, size_t *k)
{
    if (ndim == 0) {
        if (v->kind != CJ_NUM) {
            return -1;
        }
        out[(*k)++] = v->num;
        return 0;
    }
    if (v->kind != CJ_ARR || v->len != dims[0]) {
        return -1;
    }
    for (const cj *e = v->child; e != NULL; e = e->next) {
        if (flatten(e, dims + 1, ndim - 1, out, k) != 0) {
            return -1;
        }
    }
    return 0;
}

static int add_numbers(aims_msg *m, const char *name, aims_dtype dt, const uint64_t *dims,
                       size_t ndim, const double *vals, size_t n)
{
    void *data = NULL;
    if (aims_msg_alloc(m, name, dt, dims, ndim, &data) != AIMS_OK) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case AIMS_DT_F32: ((float *)data)[i] = (float)vals[i]; break;
        case AIMS_DT_I32: ((int32_t *)data)[i] = (int32_t)vals[i]; break;
        case AIMS_DT_U8: ((uint8_t *)data)[i] = (uint8_t)vals[i]; break;
        case AIMS_DT_I64: ((int64_t *)data)[i] = (int64_t)vals[i]; break;
        case AIMS_DT_BYTES: ((uint8_t *)data)[i] = (uint8_t)vals[i]; break;
        }
    }
    return 0;
}

static int add_json_tensor(aims_msg *m, const cj *v)
{
    const char *name = v->key;
    if (v->kind == CJ_STR) {
        const uint64_t dims[1] = {v->len};
        return aims_msg_add(m, name, AIMS_DT_BYTES, dims, 1, v->str, 0) == AIMS_OK ? 0 : -1;
    }
    aims_dtype dt = AIMS_DT_F32;
    const cj *data = v;
    uint64_t dims[AIMS_MSG_MAX_NDIM];
    size_t ndim = 0;
    int explicit_shape = 0;
    if (v->kind == CJ_OBJ) {
        const cj *d = cj_get(v, "dtype");
        const cj *s = cj_get(v, "shape");
        data = cj_get(v, "data");
        if (d != NULL && (d->kind != CJ_STR || dtype_by_name(d->str, &dt) != 0)) {
            fprintf(stderr, "aims call: tensor '%s': dtype must be f32|i32|u8|i64|bytes\n", name);
            return -2;
        }
        if (data == NULL) {
            fprintf(stderr, "aims call: tensor '%s': no \"data\"\n", name);
            return -2;
        }
        if (s != NULL) {
            if (s->kind != CJ_ARR || s->len > AIMS_MSG_MAX_NDIM) {
                fprintf(stderr, "aims call: tensor '%s': bad \"shape\"\n", name);
                return -2;
            }
            for (const cj *e = s->child; e != NULL; e = e->next) {
                if (e->kind != CJ_NUM || e->num < 0 || e->num != floor(e->num)) {
                    fprintf(stderr, "aims call: tensor '%s': bad \"shape\"\n", name);
                    return -2;
                }
                dims[ndim++] = (uint64_t)e->num;
            }
            explicit_shape = 1;
        }
        if (data->kind == CJ_STR) {
            const uint64_t bd[1] = {data->len};
            return aims_msg_add(m, name, dt, explicit_shape ? dims : bd,
                                explicit_shape ? ndim : 1, data->str, 0) == AIMS_OK ? 0 : -1;
        }
    }
    uint64_t nd[AIMS_MSG_MAX_NDIM];
    size_t nnd = 0;
    if ((data->kind != CJ_ARR && data->kind != CJ_NUM) || nested_shape(data, nd, &nnd) != 0) {
        fprintf(stderr, "aims call: tensor '%s': expected numbers, nested arrays or a string\n",
                name);
        return -2;
    }
    size_t count = 1;
    for (size_t i = 0; i < nnd; i++) {
        count *= (size_t)nd[i];
        if (count > ((size_t)1 << 28)) {
            fprintf(stderr, "aims call: tensor '%s' is too large\n", name);
            return -2;
        }
    }
    double *vals = malloc((count ? count : 1) * sizeof *vals);
    size_t k = 0;
    if (vals == NULL || flatten(data, nd, nnd, vals, &k) != 0) {
        free(vals);
        fprintf(stderr, "aims call: tensor '%s': ragged or non-numeric array\n", name);
        return -2;
    }
    if (!explicit_shape) {
        memcpy(dims, nd, sizeof nd);
        ndim = nnd;
    }
    size_t want = 1;
    for (size_t i = 0; i < ndim; i++) {
        want *= (size_t)dims[i];
    }
    if (want != k) {
        free(vals);
        fprintf(stderr, "aims call: tensor '%s': shape holds %zu values, data has %zu\n", name,
                want, k);
        return -2;
    }
    const int rc = add_numbers(m, name, dt, dims, ndim, vals, k);
    free(vals);
    return rc;
}

static int request_from_json(aims_msg *m, const char *path)
{
    size_t len = 0;
    char *text = cli_read_file(path, &len);
    if (text == NULL) {
        fprintf(stderr, "aims call: cannot read %s: %s\n", path, strerror(errno));
        return 1;
    }
    char err[128];
    cj *root = cj_parse(text, len, err, sizeof err);
    free(text);
    if (root == NULL || root->kind != CJ_OBJ) {
        fprintf(stderr, "aims call: %s: %s\n", path,
                root == NULL ? err : "expected a JSON object {\"name\": tensor, ...}");
        cj_free(root);
        return CLI_EXIT_USAGE;
    }
    int rc = 0;
    for (const cj *e = root->child; e != NULL && rc == 0; e = e->next) {
        const int r = add_json_tensor(m, e);
        if (r == -1) {
            fprintf(stderr, "aims call: tensor '%s': %s\n", e->key, aims_errmsg());
        }
        rc = r == 0 ? 0 : CLI_EXIT_USAGE;
    }
    cj_free(root);
    return rc;
}

/* One CSV row (0-based after the header) as "x" f32 [1, cols]. */
static int request_from_csv(aims_msg *m, const call_opts *o)
{
    FILE *f = strcmp(o->csv, "-") == 0 ? stdin : fopen(o->csv, "r");
    if (f == NULL) {
        fprintf(stderr, "aims call: cannot read %s: %s\n", o->csv, strerror(errno));
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    int64_t want = o->row + (o->header ? 1 : 0);
    int64_t lineno = 0;
    ssize_t got = -1;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (got <= 1 && (line[0] == '\n' || line[0] == '\0')) {
            continue; /* blank lines are not rows */
        }
        if (want-- == 0) {
            break;
        }
    }
    if (f != stdin) {
        fclose(f);
    }
    if (got < 0) {
        free(line);
        fprintf(stderr, "aims call: %s has no row %" PRId64 "\n", o->csv, o->row);
        return CLI_EXIT_USAGE;
    }
    double vals[4096];
    size_t n = 0;
    int64_t col = 0;
    for (char *p = line, *tok = NULL; (tok = strsep(&p, ",")) != NULL; col++) {
        const int64_t drop = o->label_column;
        if (drop == col || (drop == -1 && p == NULL)) {
            continue;
        }
        char *end = NULL;
        const double d = strtod(tok, &end);
        while (end != NULL && (*end == ' ' || *end == '\r' || *end == '\n')) {
            end++;
        }
        if (n == sizeof vals / sizeof vals[0]) {
            fprintf(stderr, "aims call: %s:%" PRId64 ": more than %zu columns\n", o->csv, lineno,
                    sizeof vals / sizeof vals[0]);
            free(line);
            return CLI_EXIT_USAGE;
        }
        if (end == tok || *end != '\0' || !isfinite(d)) {
            fprintf(stderr, "aims call: %s:%" PRId64 ": column %" PRId64
                            " is not a finite number: '%s'\n",
                    o->csv, lineno, col + 1, tok);
            free(line);
            return CLI_EXIT_USAGE;
        }
        vals[n++] = d;
    }
    free(line);
    const uint64_t dims[2] = {1, n};
    if (add_numbers(m, o->name, AIMS_DT_F32, dims, 2, vals, n) != 0) {
        fprintf(stderr, "aims call: %s\n", aims_errmsg());
        return 1;
    }
    return 0;
}

/* ---- printing the reply --------------------------------------------------------------- */

static void print_number(double d)
{
    if (!isfinite(d)) {
        fputs("null", stdout);
    } else if (d == floor(d) && fabs(d) < 1e15) {
        printf("%.0f", d);
    } else {
        printf("%.9g", d);
    }
}

static double element(aims_dtype dt, const void *data, size_t i)
{
    const unsigned char *p = data;
    switch (dt) {
    case AIMS_DT_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case AIMS_DT_I32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case AIMS_DT_I64: {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        return (double)v;
    }
    case AIMS_DT_U8:
    case AIMS_DT_BYTES: return p[i];
    }
    return 0;
}

/* Nested arrays following dims (row-major). */
static void print_nested(aims_dtype dt, const void *data, const uint64_t *dims, size_t ndim,
                         size_t *k)
{
    if (ndim == 0) {
        print_number(element(dt, data, (*k)++));
        return;
    }
    putchar('[');
    for (uint64_t i = 0; i < dims[0]; i++) {
        if (i > 0) {
            putchar(',');
        }
        print_nested(dt, data, dims + 1, ndim - 1, k);
    }
    putchar(']');
}

static int print_reply(const call_opts *o, const aims_msg *reply)
{
    fputs("{\"service\":", stdout);
    cli_json_string(stdout, o->service, strlen(o->service));
    fputs(",\"method\":", stdout);
    cli_json_string(stdout, o->method, strlen(o->method));
    fputs(",\"tensors\":{", stdout);
    for (size_t i = 0; i < aims_msg_num_tensors(reply); i++) {
        const char *name = NULL;
        aims_dtype dt = AIMS_DT_F32;
        size_t ndim = 0, bytes = 0;
        const uint64_t *dims = NULL;
        const void *data = NULL;
        if (aims_msg_get_tensor(reply, i, &name, &dt, &ndim, &dims, &data, &bytes) != AIMS_OK) {
            return 1;
        }
        printf("%s", i > 0 ? "," : "");
        cli_json_string(stdout, name, strlen(name));
        printf(":{\"dtype\":\"%s\",\"shape\":[", dtype_name(dt));
        for (size_t d = 0; d < ndim; d++) {
            printf("%s%" PRIu64, d > 0 ? "," : "", dims[d]);
        }
        fputs("],\"data\":", stdout);
        if (dt == AIMS_DT_BYTES) {
            cli_json_string(stdout, data, bytes);
        } else {
            size_t k = 0;
            print_nested(dt, data, dims, ndim, &k);
        }
        putchar('}');
    }
    fputs("}}\n", stdout);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- the command ------------------------------------------------------------------- */

static int parse_call(int argc, char **argv, call_opts *o)
{
    memset(o, 0, sizeof *o);
    o->name = "x";
    o->label_column = -2;
    o->timeout_ms = 10000;
    const char **pos[3] = {&o->url, &o->service, &o->method};
    int npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "-") == 0) {
            if (npos == 3) {
                return call_usage("too many arguments");
            }
            *pos[npos++] = a;
            continue;
        }
        if (strcmp(a, "--registry") == 0) {
            o->registry = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "aims call: %s needs a value\n", a);
            return call_usage(NULL);
        }
        const char *v = argv[++i];
        int bad = 0;
        int64_t num = 0;
        if (strcmp(a, "--json") == 0) {
            o->json = v;
        } else if (strcmp(a, "--csv") == 0) {
            o->csv = v;
        } else if (strcmp(a, "--text") == 0) {
            o->text = v;
        } else if (strcmp(a, "--name") == 0) {
            o->name = v;
        } else if (strcmp(a, "--row") == 0) {
            bad = cli_parse_int(v, &o->row) != 0 || o->row < 0;
        } else if (strcmp(a, "--label-column") == 0) {
            bad = cli_parse_int(v, &o->label_column) != 0 || o->label_column < -1;
        } else if (strcmp(a, "--header") == 0) {
            bad = cli_parse_int(v, &num) != 0 || num < 0 || num > 1;
            o->header = (int)num;
        } else if (strcmp(a, "--timeout") == 0) {
            bad = cli_parse_int(v, &o->timeout_ms) != 0 || o->timeout_ms <= 0;
        } else {
            fprintf(stderr, "aims call: unknown option '%s'\n", a);
            return call_usage(NULL);
        }
        if (bad) {
            fprintf(stderr, "aims call: %s: bad value '%s'\n", a, v);
            return call_usage(NULL);
        }
    }
    if (npos != 3) {
        return call_usage("URL, SERVICE and METHOD are required");
    }
    if ((o->json != NULL) + (o->csv != NULL) + (o->text != NULL) > 1) {
        return call_usage("give one of --json, --csv, --text");
    }
    return 0;
}

int cli_call(int argc, char **argv)
{
    call_opts o;
    int rc = parse_call(argc, argv, &o);
    if (rc != 0) {
        return rc;
    }
    aims_msg *req = NULL, *reply = NULL;
    aims_client *c = NULL;
    if (aims_msg_create(&req) != AIMS_OK || aims_msg_create(&reply) != AIMS_OK ||
        aims_client_create(&c) != AIMS_OK) {
        rc = cli_fail("call", NULL);
        goto out;
    }
    if (o.json != NULL || (o.csv == NULL && o.text == NULL && !isatty(STDIN_FILENO))) {
        rc = request_from_json(req, o.json != NULL ? o.json : "-");
    } else if (o.csv != NULL) {
        rc = request_from_csv(req, &o);
    } else if (o.text != NULL) {
        const uint64_t dims[1] = {strlen(o.text)};
        rc = aims_msg_add(req, "text", AIMS_DT_BYTES, dims, 1, o.text, 0) == AIMS_OK
                 ? 0 : cli_fail("call", NULL);
    }
    if (rc != 0) {
        goto out;
    }
    aims_status st;
    if (o.registry) {
        st = aims_client_join(c, o.url);
        if (st == AIMS_OK) {
            st = aims_client_call(c, o.service, o.method, req, reply, 0, o.timeout_ms);
        }
    } else {
        st = aims_client_call_addr(c, o.url, o.service, o.method, req, reply, o.timeout_ms);
    }
    if (st != AIMS_OK) {
        const char *why = aims_client_errmsg(c);
        const char *text = aims_msg_error(reply);
        fprintf(stderr, "aims call: %s.%s at %s: %s", o.service, o.method, o.url,
                aims_strerror(st));
        if (why != NULL && why[0] != '\0') {
            fprintf(stderr, ": %s", why);
        }
        if (text != NULL && text[0] != '\0' && (why == NULL || strstr(why, text) == NULL)) {
            fprintf(stderr, " (service said: %s)", text);
        }
        fputc('\n', stderr);
        rc = 1;
        goto out;
    }
    rc = print_reply(&o, reply);
out:
    aims_client_destroy(c);
    aims_msg_destroy(reply);
    aims_msg_destroy(req);
    return rc;
}
