/*
 * model_file.c -- the model file format: aims_model_save/parse/load and the
 * container sections used by bundles (aimsi_model_write/read).
 *
 * Files. A model is one container (kind MODEL) with a header section 'MHDR'
 * (kind, dims, every layer's shape and activation, parameters, flags), the
 * float parameters 'MPRM' and, for int8 models, 'QDNS'. The reader treats all
 * of it as hostile: every count is capped before it sizes anything, the layer
 * chain must be consistent, and the model is rebuilt through the same
 * create/add/finalize calls a user makes, so a loaded model obeys exactly the
 * invariants of a constructed one.
 */
#include <math.h>
#include <string.h>

#include "aimsi_modelobj.h"
#include "aimsi_quant.h"

/* A model file stores its kind as the aims_model_kind number (read back by a
 * cast in the header decoder), so these values are a file format too. */
_Static_assert(AIMS_MODEL_KIND_LINEAR == 1 && AIMS_MODEL_KIND_LOGISTIC == 2 && AIMS_MODEL_KIND_SOFTMAX == 3 &&
                   AIMS_MODEL_KIND_MLP == 4 && AIMS_MODEL_KIND_TEXT == 5,
               "aims_model_kind values are .aimsm file codes: never renumber");

#define TAG_MHDR AIMSI_TAG('M', 'H', 'D', 'R')
#define TAG_MPRM AIMSI_TAG('M', 'P', 'R', 'M')
#define TAG_QDNS AIMSI_TAG('Q', 'D', 'N', 'S')
/* Header version 2 = version 1 + a u32 text_linear after `precision`. Models
 * with text_linear 0 are still written as version 1, so their files stay
 * byte-identical to (and readable by) earlier builds. */
#define HDR_VERSION 1u
#define HDR_VERSION_TEXT_LINEAR 2u

/* ---- files -------------------------------------------------------------------------------- */

static aims_status put_u64(aimsi_buf *b, uint64_t v)
{
    return aimsi_buf_put_u64le(b, v);
}

static aims_status write_header(const aims_model *m, aimsi_buf *b)
{
    AIMSI_TRY(aimsi_buf_put_u32le(b, m->text_linear ? HDR_VERSION_TEXT_LINEAR : HDR_VERSION));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->kind));
    AIMSI_TRY(put_u64(b, m->input_dim));
    AIMSI_TRY(put_u64(b, m->output_dim));
    AIMSI_TRY(put_u64(b, m->embed_dim));
    AIMSI_TRY(aimsi_buf_put_f64le(b, m->dropout));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->loss_param));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->loss));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->threads));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->precision));
    if (m->text_linear) {
        AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->text_linear));
    }
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)(m->trained ? 1 : 0)));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)(m->quantized ? 1 : 0)));
    AIMSI_TRY(put_u64(b, m->n_params));
    AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->n_layers));
    for (size_t i = 0; i < m->n_layers; i++) {
        AIMSI_TRY(put_u64(b, m->layers[i].in));
        AIMSI_TRY(put_u64(b, m->layers[i].out));
        AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)m->layers[i].act));
    }
    return AIMS_OK;
}

static aims_status write_q8(const aims_model *m, aimsi_buf *b)
{
    for (size_t i = 0; i < m->n_layers; i++) {
        const aimsi_dense *L = &m->layers[i];
        AIMSI_TRY(aimsi_buf_put_u8(b, L->qw != NULL ? 1 : 0));
        if (L->qw == NULL) {
            continue;
        }
        uint32_t bits = 0;
        memcpy(&bits, &L->xscale, sizeof bits);
        AIMSI_TRY(aimsi_buf_put_u32le(b, bits));
        for (size_t o = 0; o < L->out; o++) {
            memcpy(&bits, &L->wscale[o], sizeof bits);
            AIMSI_TRY(aimsi_buf_put_u32le(b, bits));
            AIMSI_TRY(aimsi_buf_put_u32le(b, (uint32_t)L->qwsum[o]));
        }
        AIMSI_TRY(aimsi_buf_append(b, L->qw, L->in * L->out));
    }
    return AIMS_OK;
}

aims_status aimsi_model_write(const aims_model *m, aimsi_cwriter *w)
{
    if (m->params == NULL) {
        return aimsi_err(NULL, AIMS_E_STATE, "model write: the model has no structure yet");
    }
    aimsi_buf b;
    aimsi_buf_init(&b);
    aims_status rc = write_header(m, &b);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_add(w, TAG_MHDR, b.data, b.len);
    }
    if (rc == AIMS_OK) {
        /* floats are stored little-endian (the codec swaps on big-endian hosts) */
        rc = aimsi_cw_add_words(w, TAG_MPRM, m->params, m->n_params, sizeof *m->params);
    }
    if (rc == AIMS_OK && m->quantized) {
        b.len = 0;
        rc = write_q8(m, &b);
        if (rc == AIMS_OK) {
            rc = aimsi_cw_add(w, TAG_QDNS, b.data, b.len);
        }
    }
    aimsi_buf_free(&b);
    return rc;
}

#define RD(expr)                                                                       \
    do {                                                                               \
        if ((expr) != 0) {                                                             \
            return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: truncated at byte %zu", \
                             rd->pos);                                                 \
        }                                                                              \
    } while (0)

typedef struct hdr_info {
    uint32_t kind, loss, resolved, threads, precision, text_linear, trained, quantized, n_layers;
    uint64_t in, out, embed, n_params;
    double dropout;
    uint64_t lin[AIMSI_MAX_LAYERS], lout[AIMSI_MAX_LAYERS];
    uint32_t lact[AIMSI_MAX_LAYERS];
} hdr_info;

static aims_status read_header(aimsi_rd *rd, hdr_info *h)
{
    uint32_t version = 0;
    RD(aimsi_rd_u32le(rd, &version));
    if (version != HDR_VERSION && version != HDR_VERSION_TEXT_LINEAR) {
        return aimsi_err(NULL, AIMS_E_UNSUPPORTED, "model header: version %u (expected %u or %u)",
                         version, HDR_VERSION, HDR_VERSION_TEXT_LINEAR);
    }
    RD(aimsi_rd_u32le(rd, &h->kind));
    RD(aimsi_rd_u64le(rd, &h->in));
    RD(aimsi_rd_u64le(rd, &h->out));
    RD(aimsi_rd_u64le(rd, &h->embed));
    RD(aimsi_rd_f64le(rd, &h->dropout));
    RD(aimsi_rd_u32le(rd, &h->loss));
    RD(aimsi_rd_u32le(rd, &h->resolved));
    RD(aimsi_rd_u32le(rd, &h->threads));
    RD(aimsi_rd_u32le(rd, &h->precision));
    h->text_linear = 0;
    if (version == HDR_VERSION_TEXT_LINEAR) {
        RD(aimsi_rd_u32le(rd, &h->text_linear));
    }
    RD(aimsi_rd_u32le(rd, &h->trained));
    RD(aimsi_rd_u32le(rd, &h->quantized));
    RD(aimsi_rd_u64le(rd, &h->n_params));
    RD(aimsi_rd_u32le(rd, &h->n_layers));
    if (h->n_layers == 0 || h->n_layers >= AIMSI_MAX_LAYERS) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: %u layers", h->n_layers);
    }
    for (uint32_t i = 0; i < h->n_layers; i++) {
        RD(aimsi_rd_u64le(rd, &h->lin[i]));
        RD(aimsi_rd_u64le(rd, &h->lout[i]));
        RD(aimsi_rd_u32le(rd, &h->lact[i]));
    }
    return AIMS_OK;
}

/* Rebuild the model from a header through the public construction calls, then
 * check that the result has exactly the stored shapes. */
static aims_status build_from_header(const hdr_info *h, aims_model **out)
{
    if (h->kind != AIMS_MODEL_KIND_MLP && h->n_layers != 1) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: kind %u with %u layers", h->kind,
                         h->n_layers);
    }
    if (h->in > MAX_DIM || h->out > MAX_DIM || h->embed == 0 || h->embed > 4096 ||
        h->loss > 3 || h->resolved < 1 || h->resolved > 3 || h->threads > 256 || h->precision > 1 || h->trained > 1 ||
        h->quantized > 1 || !(h->dropout >= 0.0 && h->dropout <= 0.99) || h->text_linear > 1) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: a field is out of range");
    }
    if (h->kind != AIMS_MODEL_KIND_TEXT && (h->text_linear != 0 || h->loss == 3 || h->resolved == 3)) {
        return aimsi_err(NULL, AIMS_E_CORRUPT,
                         "model header: text_linear / hinge loss on a kind %u model", h->kind);
    }
    aims_model *m = NULL;
    aims_status rc = aims_model_create((aims_model_kind)h->kind, h->in, h->out, &m);
    if (rc == AIMS_E_INVAL) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: kind %u, dims %llu x %llu", h->kind,
                       (unsigned long long)h->in, (unsigned long long)h->out);
    }
    AIMSI_TRY(rc);
    m->embed_dim = (size_t)h->embed;
    m->loss_param = (int)h->loss;
    m->loss = (int)h->resolved;
    m->threads = (int)h->threads;
    m->precision = (int)h->precision;
    m->text_linear = (int)h->text_linear;
    m->dropout = h->dropout;
    for (uint32_t i = 0; i + 1 < h->n_layers && rc == AIMS_OK; i++) {
        rc = aims_model_add_dense(m, (size_t)h->lout[i], (aims_activation)h->lact[i]);
        if (rc != AIMS_OK && rc != AIMS_E_NOMEM) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: layer %u is invalid", i);
        }
    }
    if (rc == AIMS_OK) {
        rc = aimsi_model_finalize(m);
        if (rc == AIMS_E_RANGE) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: too many parameters");
        }
    }
    for (uint32_t i = 0; i < h->n_layers && rc == AIMS_OK; i++) {
        const aimsi_dense *L = &m->layers[i];
        if (L->in != h->lin[i] || L->out != h->lout[i] || (uint32_t)L->act != h->lact[i]) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: layer %u shape mismatch", i);
        }
    }
    if (rc == AIMS_OK && m->embed_dim != h->embed) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: embed_dim %llu does not fit the model",
                       (unsigned long long)h->embed);
    }
    if (rc == AIMS_OK && m->loss != (int)h->resolved) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: loss %u does not fit the model",
                       h->resolved);
    }
    if (rc == AIMS_OK && (m->n_layers != h->n_layers || m->n_params != h->n_params)) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model header: %llu parameters declared, "
                                             "structure has %zu",
                       (unsigned long long)h->n_params, m->n_params);
    }
    if (rc != AIMS_OK) {
        aims_model_destroy(m);
        return rc;
    }
    *out = m;
    return AIMS_OK;
}

static aims_status read_q8(aims_model *m, const uint8_t *p, size_t len)
{
    aimsi_rd rdv;
    aimsi_rd *rd = &rdv;
    aimsi_rd_init(rd, p, len);
    for (size_t i = 0; i < m->n_layers; i++) {
        aimsi_dense *L = &m->layers[i];
        uint8_t has = 0;
        RD(aimsi_rd_u8(rd, &has));
        if (has == 0) {
            continue;
        }
        uint32_t bits = 0;
        RD(aimsi_rd_u32le(rd, &bits));
        memcpy(&L->xscale, &bits, sizeof bits);
        /* the sizes below are bounded by the structure, already capped */
        if (aimsi_rd_left(rd) / 8 < L->out) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "model int8 layer %zu: truncated", i);
        }
        L->wscale = aimsi_malloc(L->out * sizeof *L->wscale);
        L->qwsum = aimsi_malloc(L->out * sizeof *L->qwsum);
        L->qw = aimsi_malloc(aimsi_q8_qw_bytes(L->in, L->out)); /* matrix + panels */
        if (L->wscale == NULL || L->qwsum == NULL || L->qw == NULL) {
            return aimsi_err(NULL, AIMS_E_NOMEM, "model load: out of memory");
        }
        for (size_t o = 0; o < L->out; o++) {
            uint32_t s = 0;
            uint32_t q = 0;
            RD(aimsi_rd_u32le(rd, &s));
            RD(aimsi_rd_u32le(rd, &q));
            memcpy(&L->wscale[o], &s, sizeof s);
            L->qwsum[o] = (int32_t)q;
            if (!isfinite(L->wscale[o])) {
                return aimsi_err(NULL, AIMS_E_CORRUPT, "model int8 layer %zu: bad scale", i);
            }
        }
        const uint8_t *q = NULL;
        RD(aimsi_rd_bytes(rd, L->in * L->out, &q));
        memcpy(L->qw, q, L->in * L->out);
        aimsi_q8_pack(L);
        if (!isfinite(L->xscale) || L->xscale <= 0.0f) {
            return aimsi_err(NULL, AIMS_E_CORRUPT, "model int8 layer %zu: bad input scale", i);
        }
    }
    return AIMS_OK;
}

/* Takes ownership of prm (the decoded parameter section, n_params floats). */
static aims_status read_body(aimsi_creader *r, aims_model *m, uint32_t quantized, float *prm)
{
    void *p = NULL;
    size_t len = 0;
    aims_status rc = AIMS_OK;
    for (size_t i = 0; i < m->n_params; i++) {
        if (!isfinite(prm[i])) {
            rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model parameters: value %zu is not finite", i);
            break;
        }
    }
    /* adopt the decoded block instead of copying it (big TEXT tables) */
    aimsi_free(m->params);
    m->params = prm;
    if (rc != AIMS_OK || !quantized) {
        return rc;
    }
    size_t cap = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        cap += 5 + 8 * m->layers[i].out + m->layers[i].in * m->layers[i].out;
    }
    rc = aimsi_cr_section(r, TAG_QDNS, cap, &p, &len);
    if (rc == AIMS_OK) {
        rc = read_q8(m, p, len);
        m->quantized = 1;
    }
    aimsi_free(p);
    return rc;
}

aims_status aimsi_model_read(aimsi_creader *r, aims_model **out)
{
    void *p = NULL;
    size_t len = 0;
    aims_status rc = aimsi_cr_section(r, TAG_MHDR, 16384, &p, &len);
    if (rc != AIMS_OK) {
        return rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE
                   ? aimsi_err(NULL, AIMS_E_CORRUPT, "model: header section missing or too big")
                   : rc;
    }
    hdr_info h;
    memset(&h, 0, sizeof h);
    aimsi_rd rd;
    aimsi_rd_init(&rd, p, len);
    rc = read_header(&rd, &h);
    aimsi_free(p);
    AIMSI_TRY(rc);
    /* decode the parameters before building: the section's real size, not
     * the header's claim, decides whether a large table gets allocated */
    if (h.n_params == 0 || h.n_params > MAX_PARAMS) {
        return aimsi_err(NULL, AIMS_E_CORRUPT, "model header: %llu parameters",
                         (unsigned long long)h.n_params);
    }
    const size_t want = (size_t)h.n_params * sizeof(float);
    p = NULL;
    rc = aimsi_cr_section(r, TAG_MPRM, want, &p, &len);
    if (rc == AIMS_OK && len != want) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model parameters: %zu bytes, expected %zu", len,
                       want);
    } else if (rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model: parameter section missing or too big");
    }
    if (rc != AIMS_OK) {
        aimsi_free(p);
        return rc;
    }
    aimsi_le_words(p, (size_t)h.n_params, sizeof(float)); /* file order -> host order */
    aims_model *m = NULL;
    rc = build_from_header(&h, &m);
    if (rc != AIMS_OK) {
        aimsi_free(p);
        return rc;
    }
    rc = read_body(r, m, h.quantized, p);
    if (rc == AIMS_E_NOTFOUND || rc == AIMS_E_RANGE) {
        rc = aimsi_err(NULL, AIMS_E_CORRUPT, "model: int8 section missing or wrong size");
    }
    if (rc != AIMS_OK) {
        aims_model_destroy(m);
        return rc;
    }
    m->trained = (int)h.trained;
    *out = m;
    return AIMS_OK;
}

static aims_status fill_model(const void *m, aimsi_cwriter *w)
{
    return aimsi_model_write(m, w);
}

static aims_status take_model(aimsi_creader *r, void *out)
{
    return aimsi_model_read(r, out);
}

aims_status aims_model_save(const aims_model *m, const char *path)
{
    if (!MODEL_OK(m) || path == NULL) {
        return AIMSI_MISUSE("invalid model handle or NULL path");
    }
    if (!m->trained) {
        return aimsi_err(NULL, AIMS_E_STATE, "aims_model_save: the model is not trained");
    }
    return aimsi_container_save(AIMSI_KIND_MODEL, 0, m, fill_model, path);
}

aims_status aims_model_parse(const void *data, size_t size, aims_model **out)
{
    if (data == NULL || out == NULL) {
        return AIMSI_MISUSE("data and out must not be NULL");
    }
    return aimsi_container_parse(AIMSI_KIND_MODEL, data, size, take_model, out);
}

aims_status aims_model_load(const char *path, aims_model **out)
{
    if (path == NULL || out == NULL) {
        return AIMSI_MISUSE("path and out must not be NULL");
    }
    return aimsi_container_load(AIMSI_KIND_MODEL, path, (uint64_t)MAX_PARAMS * 8, take_model, out);
}
