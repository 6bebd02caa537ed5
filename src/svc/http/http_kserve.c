/*
 * http_kserve.c -- the Open Inference Protocol (KServe v2) JSON of the HTTP
 * front door: infer requests in, infer replies, model metadata and errors out.
 *
 * Decoding uses cJSON (a well-kept parser: strict RFC 8259 numbers, so NaN,
 * Infinity and other non-JSON tokens are refused at parse time) and then
 * checks the tree against the model before anything is allocated for the
 * tensor: the element count is the product of "shape", capped by the body
 * size (every element costs at least one byte of JSON), and "data" -- flat or
 * nested to any depth cJSON accepts -- must hold exactly that many elements
 * of the declared datatype (integral and in range for INT*, finite as FP32).
 * A mismatch is a 400 whose message says which field and why.
 *
 * The mapping onto the infer service (svc_infer.c):
 *   dense model: input "x", FP32 (or FP64/INT32/INT64/UINT8, converted),
 *                shape [rows, cols] or [cols]        -> "x" f32 [rows, cols]
 *   text model:  input "text", BYTES, shape [n]      -> "text": the n documents
 *                joined by '\n' (a '\n' or '\r' inside a document becomes ' ')
 *   parameters.output "class" | "scores" | "probabilities" (or 0/1/2)
 *                                                     -> i32 scalar "output"
 *   reply "y" f32                                     -> output "y", FP32
 *
 * Encoding is written by hand into an aimsi_hbuf: floats as %.9g, which reads
 * back to the same float, so HTTP and native clients see identical numbers.
 *
 * cJSON allocates with the C allocator: its hooks are process-global and a
 * host may use cJSON too, so the library does not install aimsi_malloc there;
 * every cJSON tree lives only inside aimsi_kserve_decode.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "aimsi_http.h"

enum { DT_FP32 = 1, DT_FP64, DT_INT32, DT_INT64, DT_UINT8, DT_BYTES };

static int dtype_of(const char *s)
{
    static const struct {
        const char *name;
        int dt;
    } k[] = {{"FP32", DT_FP32},   {"FP64", DT_FP64},   {"INT32", DT_INT32},
             {"INT64", DT_INT64}, {"UINT8", DT_UINT8}, {"BYTES", DT_BYTES}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (strcmp(s, k[i].name) == 0) {
            return k[i].dt;
        }
    }
    return 0;
}

static aims_status fail(char *err, size_t cap, aims_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static aims_status fail(char *err, size_t cap, aims_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return st;
}

/* Walk "data" (flat or nested arrays) in order, calling leaf() per element. */
typedef struct walk {
    size_t n, cap;  /* elements seen / expected */
    int dt;
    float *f;       /* numeric: destination */
    aimsi_hbuf *text; /* BYTES: joined documents */
    const char *bad; /* first problem */
} walk;

/* One BYTES element (n bytes of p). */
static void leaf_str(walk *w, const char *p, size_t n)
{
    if (w->n >= w->cap) {
        w->n++;
        return;
    }
    if (w->n > 0) {
        aimsi_hbuf_add(w->text, "\n", 1);
    }
    const size_t start = w->text->len;
    aimsi_hbuf_add(w->text, p, n);
    for (size_t i = start; i < w->text->len && !w->text->failed; i++) {
        if (w->text->p[i] == '\n' || w->text->p[i] == '\r') {
            w->text->p[i] = ' ';
        }
    }
    w->n++;
}

/* One numeric element, checked against the datatype. */
static void leaf_num(walk *w, double d)
{
    if (w->n >= w->cap) {
        w->n++;
        return;
    }
    switch (w->dt) {
    case DT_FP32:
        if (!isfinite(d) || fabs(d) > 3.4028234663852886e38) {
            w->bad = "an FP32 value is out of range (or not finite)";
            return;
        }
        break;
    case DT_FP64:
        if (!isfinite(d)) {
            w->bad = "an FP64 value is not finite";
            return;
        }
        break;
    case DT_INT32:
    case DT_INT64:
    case DT_UINT8: {
        const double lo = w->dt == DT_UINT8 ? 0.0 : w->dt == DT_INT32 ? -2147483648.0
                                                                        : -9007199254740992.0;
        const double hi = w->dt == DT_UINT8 ? 255.0 : w->dt == DT_INT32 ? 2147483647.0
                                                                          : 9007199254740992.0;
        if (d != floor(d) || d < lo || d > hi) {
            w->bad = w->dt == DT_UINT8 ? "a UINT8 value is not an integer in 0..255"
                                       : "an integer value is not integral or out of range";
            return;
        }
        break;
    }
    default:
        w->bad = "unsupported datatype";
        return;
    }
    w->f[w->n++] = (float)d;
}

static void leaf(walk *w, const cJSON *v)
{
    if (w->dt == DT_BYTES) {
        if (!cJSON_IsString(v)) {
            w->bad = "BYTES data must be strings";
            return;
        }
        leaf_str(w, v->valuestring, strlen(v->valuestring));
    } else if (!cJSON_IsNumber(v)) {
        w->bad = "numeric data must be JSON numbers";
    } else {
        leaf_num(w, v->valuedouble);
    }
}

/* Element size of a datatype in the binary extension (0: length-prefixed BYTES). */
static size_t bin_size(int dt)
{
    return dt == DT_FP32 || dt == DT_INT32 ? 4 : dt == DT_FP64 || dt == DT_INT64 ? 8
                                                : dt == DT_UINT8 ? 1 : 0;
}

/* The binary tensor extension: n bytes of little-endian elements (BYTES: each
 * a u32 little-endian length, then the bytes). */
static void walk_binary(walk *w, const uint8_t *p, size_t n)
{
    const size_t es = bin_size(w->dt);
    if (es != 0 && n != w->cap * es) {
        w->bad = "binary_data_size is not shape x element size";
        return;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (w->dt == DT_FP32 && w->f != NULL && w->n == 0) {
        /* The binary FP32 infer (P12a's path): the wire bytes are the floats.
         * One copy, then the one check leaf_num makes of an FP32 value, on
         * the bits: exponent all ones = Inf or NaN (every finite float is in
         * range). Was a byte-by-byte assemble, widen and narrow per value. */
        memcpy(w->f, p, n);
        uint32_t bad = 0;
        for (size_t i = 0; i < w->cap; i++) {
            uint32_t b;
            memcpy(&b, w->f + i, sizeof b);
            bad |= (b & 0x7f800000u) == 0x7f800000u;
        }
        if (bad) {
            w->bad = "an FP32 value is out of range (or not finite)";
            return;
        }
        w->n = w->cap;
        return;
    }
#endif
    size_t off = 0;
    while (off < n && w->bad == NULL) {
        if (es == 0) {
            if (n - off < 4) {
                w->bad = "a BYTES element's length prefix is truncated";
                return;
            }
            const uint32_t l = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 |
                               (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 24;
            off += 4;
            if (l > n - off) {
                w->bad = "a BYTES element runs past binary_data_size";
                return;
            }
            leaf_str(w, (const char *)p + off, l);
            off += l;
            continue;
        }
        uint64_t u = 0;
        for (size_t k = 0; k < es; k++) {
            u |= (uint64_t)p[off + k] << (8 * k);
        }
        double d = 0;
        if (w->dt == DT_FP32) {
            const uint32_t u32 = (uint32_t)u;
            float f;
            memcpy(&f, &u32, sizeof f);
            d = f;
        } else if (w->dt == DT_FP64) {
            memcpy(&d, &u, sizeof d);
        } else if (w->dt == DT_INT32) {
            d = (double)(int32_t)(uint32_t)u;
        } else if (w->dt == DT_INT64) {
            d = (double)(int64_t)u;
        } else {
            d = (double)u;
        }
        leaf_num(w, d);
        off += es;
    }
}

static void walk_data(walk *w, const cJSON *data, int depth)
{
    if (w->bad != NULL) {
        return;
    }
    if (!cJSON_IsArray(data)) {
        leaf(w, data);
        return;
    }
    if (depth > AIMS_MSG_MAX_NDIM + 4) {
        w->bad = "\"data\" is nested too deeply";
        return;
    }
    for (const cJSON *e = data->child; e != NULL && w->bad == NULL; e = e->next) {
        walk_data(w, e, depth + 1);
    }
}

static aims_status parse_what(const cJSON *params, aimsi_kserve_req *rq, char *err, size_t cap)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(params, "output");
    if (o == NULL) {
        return AIMS_OK;
    }
    if (cJSON_IsString(o)) {
        static const char *const names[] = {"class", "scores", "probabilities"};
        for (int i = 0; i < 3; i++) {
            if (strcmp(o->valuestring, names[i]) == 0) {
                rq->what = i;
                return AIMS_OK;
            }
        }
    } else if (cJSON_IsNumber(o) && (o->valuedouble == 0 || o->valuedouble == 1 ||
                                     o->valuedouble == 2)) {
        rq->what = (int)o->valuedouble;
        return AIMS_OK;
    }
    return fail(err, cap, AIMS_E_INVAL, "parameters.output must be \"class\", \"scores\" or "
                                        "\"probabilities\"");
}

static void num_cb(void *ctx, double v)
{
    leaf_num(ctx, v);
}

/* Fill w from "data": a cJSON array, or a placeholder for an array lifted out
 * of the body (http_numarray.c). */
static void walk_value(walk *w, const cJSON *data, const char *body, const aimsi_numarrays *na)
{
    const int k = cJSON_IsString(data) ? aimsi_numarray_index(na, data->valuestring) : -1;
    if (k < 0) {
        walk_data(w, data, 0);
    } else if (w->dt == DT_BYTES) {
        w->bad = "BYTES data must be strings";
    } else {
        const char *bad = aimsi_numarray_walk(body + na->off[k], na->len[k],
                                              AIMS_MSG_MAX_NDIM + 5, w->dt == DT_FP32, num_cb, w);
        if (bad != NULL && w->bad == NULL) {
            w->bad = bad;
        }
    }
}

static aims_status decode_input(const cJSON *in, size_t body_len, const aimsi_infer_desc *d,
                                const uint8_t *bin, size_t bin_len, const char *body,
                                const aimsi_numarrays *na, aims_msg *out, char *err, size_t cap)
{
    const char *want = d->text ? "text" : "x";
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(in, "name");
    const cJSON *dtn = cJSON_GetObjectItemCaseSensitive(in, "datatype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(in, "shape");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(in, "data");
    if (!cJSON_IsObject(in) || !cJSON_IsString(name) || !cJSON_IsString(dtn) ||
        !cJSON_IsArray(shape)) {
        return fail(err, cap, AIMS_E_INVAL, "each input needs \"name\", \"datatype\", "
                                            "\"shape\" and \"data\" (or binary_data_size)");
    }
    /* binary tensor extension: parameters.binary_data_size instead of data */
    const cJSON *bsz = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(in, "parameters"), "binary_data_size");
    if ((data == NULL) == (bsz == NULL)) {
        return fail(err, cap, AIMS_E_INVAL, "an input needs exactly one of \"data\" and "
                                            "parameters.binary_data_size");
    }
    if (bsz != NULL && (!cJSON_IsNumber(bsz) || bsz->valuedouble < 0 ||
                        bsz->valuedouble != floor(bsz->valuedouble) ||
                        bsz->valuedouble != (double)bin_len)) {
        return fail(err, cap, AIMS_E_INVAL, "binary_data_size must equal the %zu bytes after "
                                            "the JSON header", bin_len);
    }
    if (strcmp(name->valuestring, want) != 0) {
        return fail(err, cap, AIMS_E_INVAL, "unexpected input \"%.64s\": the model takes one "
                                            "input \"%s\"", name->valuestring, want);
    }
    const int dt = dtype_of(dtn->valuestring);
    if (dt == 0) {
        return fail(err, cap, AIMS_E_INVAL, "datatype \"%.32s\" is not one of FP32, FP64, "
                                            "INT32, INT64, UINT8, BYTES", dtn->valuestring);
    }
    if ((dt == DT_BYTES) != (d->text != 0)) {
        return fail(err, cap, AIMS_E_INVAL, "input \"%s\" must be %s", want,
                    d->text ? "BYTES (one document per element)" : "numeric (FP32 preferred)");
    }
    uint64_t dims[AIMS_MSG_MAX_NDIM];
    size_t ndim = 0;
    size_t count = 1;
    for (const cJSON *e = shape->child; e != NULL; e = e->next) {
        if (ndim == AIMS_MSG_MAX_NDIM || !cJSON_IsNumber(e) || e->valuedouble < 0 ||
            e->valuedouble != floor(e->valuedouble) || e->valuedouble > (double)body_len) {
            return fail(err, cap, AIMS_E_INVAL, "\"shape\" must be at most %d non-negative "
                                                "integers no larger than the body",
                        AIMS_MSG_MAX_NDIM);
        }
        dims[ndim++] = (uint64_t)e->valuedouble;
        if (aimsi_mul_ok(count, (size_t)dims[ndim - 1], &count) != 0 || count > body_len) {
            return fail(err, cap, AIMS_E_INVAL, "\"shape\" holds more elements than the body "
                                                "could carry");
        }
    }
    if (count == 0) {
        return fail(err, cap, AIMS_E_INVAL, "input \"%s\" is empty", want);
    }
    walk w = {0, count, dt, NULL, NULL, NULL};
    aims_status st = AIMS_OK;
    if (dt == DT_BYTES) {
        if (ndim != 1 && !(ndim == 2 && dims[1] == 1)) {
            return fail(err, cap, AIMS_E_INVAL, "\"text\" shape must be [n] (or [n, 1])");
        }
        aimsi_hbuf text = {0};
        w.text = &text;
        if (bsz != NULL) {
            walk_binary(&w, bin, bin_len);
        } else {
            walk_value(&w, data, body, na);
        }
        if (w.bad == NULL && w.n == count && text.failed) {
            st = fail(err, cap, AIMS_E_NOMEM, "out of memory");
        } else if (w.bad == NULL && w.n == count) {
            const uint64_t tl = text.len;
            if (tl == 0) {
                st = fail(err, cap, AIMS_E_INVAL, "the documents are empty");
            } else {
                st = aims_msg_add(out, "text", AIMS_DT_BYTES, &tl, 1, text.p, 0);
                if (st != AIMS_OK) {
                    (void)fail(err, cap, st, "%s", aims_errmsg());
                }
            }
        }
        aimsi_hbuf_free(&text);
    } else {
        uint64_t xd[2];
        if (ndim == 1) {
            xd[0] = 1;
            xd[1] = dims[0];
        } else if (ndim == 2) {
            xd[0] = dims[0];
            xd[1] = dims[1];
        } else {
            return fail(err, cap, AIMS_E_INVAL, "\"x\" shape must be [rows, %zu] or [%zu]",
                        d->in_cols, d->in_cols);
        }
        if (d->in_cols != 0 && xd[1] != d->in_cols) {
            return fail(err, cap, AIMS_E_INVAL, "\"x\" has %llu columns; the model takes %zu",
                        (unsigned long long)xd[1], d->in_cols);
        }
        void *p = NULL;
        st = aims_msg_alloc(out, "x", AIMS_DT_F32, xd, 2, &p);
        if (st != AIMS_OK) {
            return fail(err, cap, st, "%s", aims_errmsg());
        }
        w.f = p;
        if (bsz != NULL) {
            walk_binary(&w, bin, bin_len);
        } else {
            walk_value(&w, data, body, na);
        }
    }
    if (st == AIMS_OK && w.bad != NULL) {
        st = fail(err, cap, AIMS_E_INVAL, "input \"%s\": %s", want, w.bad);
    } else if (st == AIMS_OK && w.n != count) {
        st = fail(err, cap, AIMS_E_INVAL, "input \"%s\": \"data\" holds %zu elements, \"shape\" "
                                          "says %zu", want, w.n, count);
    }
    return st;
}

aims_status aimsi_kserve_decode(const char *body, size_t len, size_t json_len,
                                const aimsi_infer_desc *d, aims_msg *out, aimsi_kserve_req *rq,
                                char *err, size_t err_cap)
{
    memset(rq, 0, sizeof(*rq));
    rq->want_y = 1;
    aims_msg_clear(out);
    if (body == NULL || len == 0) {
        return fail(err, err_cap, AIMS_E_INVAL, "the request body is empty (want JSON)");
    }
    if (json_len > len) {
        return fail(err, err_cap, AIMS_E_INVAL, "Inference-Header-Content-Length %zu exceeds "
                                                "the %zu-byte body", json_len, len);
    }
    const uint8_t *bin = (const uint8_t *)body + json_len;
    const size_t bin_len = len - json_len;
    len = json_len;
    if (len == 0) {
        return fail(err, err_cap, AIMS_E_INVAL, "the JSON header is empty");
    }
    aimsi_numarrays na;
    if (aimsi_numarray_lift(body, len, &na) != AIMS_OK) {
        return fail(err, err_cap, AIMS_E_NOMEM, "out of memory");
    }
    const char *txt = na.n > 0 ? na.skeleton : body;
    const size_t txt_len = na.n > 0 ? na.skeleton_len : len;
    cJSON *root = cJSON_ParseWithLength(txt, txt_len);
    if (root == NULL) {
        /* (an offset into the skeleton when arrays were lifted: near enough) */
        const char *at = cJSON_GetErrorPtr();
        const size_t off = at != NULL && at >= txt && at <= txt + txt_len ? (size_t)(at - txt) : 0;
        aimsi_free(na.skeleton);
        return fail(err, err_cap, AIMS_E_INVAL, "the body is not valid JSON (near byte %zu)", off);
    }
    aims_status st = AIMS_OK;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "parameters");
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    const cJSON *outputs = cJSON_GetObjectItemCaseSensitive(root, "outputs");
    if (!cJSON_IsObject(root)) {
        st = fail(err, err_cap, AIMS_E_INVAL, "the body must be a JSON object");
    } else if (id != NULL && (!cJSON_IsString(id) ||
                              strlen(id->valuestring) > AIMSI_KSERVE_MAX_ID)) {
        st = fail(err, err_cap, AIMS_E_INVAL, "\"id\" must be a string of at most %d bytes",
                  AIMSI_KSERVE_MAX_ID);
    } else if (params != NULL && !cJSON_IsObject(params)) {
        st = fail(err, err_cap, AIMS_E_INVAL, "\"parameters\" must be an object");
    } else if (!cJSON_IsArray(inputs) || cJSON_GetArraySize(inputs) != 1) {
        st = fail(err, err_cap, AIMS_E_INVAL, "\"inputs\" must be an array of exactly one "
                                              "input (\"%s\")", d->text ? "text" : "x");
    } else if (outputs != NULL && !cJSON_IsArray(outputs)) {
        st = fail(err, err_cap, AIMS_E_INVAL, "\"outputs\" must be an array");
    }
    if (st == AIMS_OK && id != NULL) {
        snprintf(rq->id, sizeof(rq->id), "%s", id->valuestring);
        rq->has_id = 1;
    }
    if (st == AIMS_OK && params != NULL) {
        st = parse_what(params, rq, err, err_cap);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(params, "binary_data_output"))) {
            rq->binary = 1;
        }
    }
    for (const cJSON *o = outputs != NULL ? outputs->child : NULL; st == AIMS_OK && o != NULL;
         o = o->next) {
        const cJSON *on = cJSON_GetObjectItemCaseSensitive(o, "name");
        if (!cJSON_IsString(on) || strcmp(on->valuestring, "y") != 0) {
            st = fail(err, err_cap, AIMS_E_INVAL, "unknown output requested: the model has one "
                                                  "output \"y\"");
        } else {
            const cJSON *op = cJSON_GetObjectItemCaseSensitive(o, "parameters");
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(op, "binary_data"))) {
                rq->binary = 1;
            }
            if (op != NULL) {
                st = cJSON_IsObject(op) ? parse_what(op, rq, err, err_cap)
                                        : fail(err, err_cap, AIMS_E_INVAL,
                                               "output \"parameters\" must be an object");
            }
        }
    }
    if (st == AIMS_OK && rq->what == 0 && !d->classifier) {
        rq->what = 1; /* regression models have scores only */
    }
    if (st == AIMS_OK) {
        st = decode_input(inputs->child, len + bin_len, d, bin, bin_len, body, &na, out, err,
                          err_cap);
    }
    if (st == AIMS_OK && rq->what != 0) {
        const int32_t v = rq->what;
        st = aims_msg_add(out, "output", AIMS_DT_I32, NULL, 0, &v, 0);
        if (st != AIMS_OK) {
            (void)fail(err, err_cap, st, "%s", aims_errmsg());
        }
    }
    cJSON_Delete(root);
    aimsi_free(na.skeleton);
    if (st != AIMS_OK) {
        aims_msg_clear(out);
    }
    return st;
}

aims_status aimsi_kserve_encode_reply(aimsi_hbuf *b, const char *model, const char *version,
                                      const aimsi_kserve_req *rq, const aims_msg *reply,
                                      size_t *json_len)
{
    size_t idx = 0;
    const char *name = NULL;
    aims_dtype dt = 0;
    size_t ndim = 0;
    const uint64_t *dims = NULL;
    const void *data = NULL;
    size_t bytes = 0;
    if (aims_msg_find(reply, "y", &idx) != AIMS_OK ||
        aims_msg_get_tensor(reply, idx, &name, &dt, &ndim, &dims, &data, &bytes) != AIMS_OK ||
        dt != AIMS_DT_F32) {
        return aimsi_err(NULL, AIMS_E_INTERNAL, "the infer reply has no f32 \"y\"");
    }
    aimsi_hbuf_str(b, "{\"model_name\":");
    aimsi_hbuf_json_str(b, model, strlen(model));
    aimsi_hbuf_str(b, ",\"model_version\":");
    aimsi_hbuf_json_str(b, version, strlen(version));
    if (rq->has_id) {
        aimsi_hbuf_str(b, ",\"id\":");
        aimsi_hbuf_json_str(b, rq->id, strlen(rq->id));
    }
    aimsi_hbuf_str(b, ",\"outputs\":[{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[");
    for (size_t i = 0; i < ndim; i++) {
        if (i > 0) {
            aimsi_hbuf_add(b, ",", 1);
        }
        aimsi_hbuf_u64(b, dims[i]);
    }
    if (rq->binary) {
        /* binary tensor extension: the JSON says how many raw bytes follow it */
        aimsi_hbuf_str(b, "],\"parameters\":{\"binary_data_size\":");
        aimsi_hbuf_u64(b, bytes);
        aimsi_hbuf_str(b, "}}]}");
        *json_len = b->len;
        aimsi_hbuf_add(b, data, bytes); /* little-endian f32, as on x86-64 and arm64 */
        return b->failed ? aimsi_err(NULL, AIMS_E_NOMEM, "no memory for the reply") : AIMS_OK;
    }
    *json_len = 0;
    aimsi_hbuf_str(b, "],\"data\":[");
    const float *f = data;
    const size_t n = bytes / sizeof(float);
    for (size_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, f + i, sizeof v);
        aimsi_hbuf_printf(b, i ? ",%.9g" : "%.9g", (double)v);
    }
    aimsi_hbuf_str(b, "]}]}");
    return b->failed ? aimsi_err(NULL, AIMS_E_NOMEM, "no memory for the reply") : AIMS_OK;
}

void aimsi_kserve_model_meta(aimsi_hbuf *b, const aimsi_svc_view *v, const aimsi_infer_desc *d,
                             const char *const *versions, size_t n_versions)
{
    aimsi_hbuf_str(b, "{\"name\":");
    aimsi_hbuf_json_str(b, v->model, strlen(v->model));
    aimsi_hbuf_str(b, ",\"versions\":[");
    for (size_t i = 0; i < n_versions; i++) {
        if (i > 0) {
            aimsi_hbuf_str(b, ",");
        }
        aimsi_hbuf_json_str(b, versions[i], strlen(versions[i]));
    }
    aimsi_hbuf_str(b, "],\"platform\":\"libaims\",\"inputs\":[");
    if (d->text) {
        aimsi_hbuf_str(b, "{\"name\":\"text\",\"datatype\":\"BYTES\",\"shape\":[-1]}");
    } else {
        aimsi_hbuf_printf(b, "{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[-1,%zu]}",
                          d->in_cols);
    }
    aimsi_hbuf_str(b, "],\"outputs\":[");
    if (d->classifier) {
        aimsi_hbuf_str(b, "{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[-1]}");
    } else {
        aimsi_hbuf_printf(b, "{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[-1,%zu]}",
                          d->out_dim);
    }
    aimsi_hbuf_printf(b, "],\"parameters\":{\"output\":\"%s\",\"scores_shape\":[-1,%zu]",
                      d->classifier ? "class ids by default; \\\"scores\\\" or "
                                      "\\\"probabilities\\\" give [-1, k]"
                                    : "scores",
                      d->out_dim);
    if (d->name[0] != '\0') {
        aimsi_hbuf_str(b, ",\"bundle_name\":");
        aimsi_hbuf_json_str(b, d->name, strlen(d->name));
    }
    if (d->version[0] != '\0') {
        aimsi_hbuf_str(b, ",\"bundle_version\":");
        aimsi_hbuf_json_str(b, d->version, strlen(d->version));
    }
    aimsi_hbuf_str(b, "}}");
}

void aimsi_kserve_error(aimsi_hbuf *b, const char *text)
{
    aimsi_hbuf_str(b, "{\"error\":");
    aimsi_hbuf_json_str(b, text, strlen(text));
    aimsi_hbuf_str(b, "}");
}
