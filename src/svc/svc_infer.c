/*
 * svc_infer.c -- the built-in infer service kind (aims_service_add_infer).
 *
 * The node core (service.c) queues "predict" requests and hands run() up to
 * AIMS_SERVICE_BATCH_MAX of them at once (batching = 1). run() turns such a
 * batch into as few model calls as possible:
 *
 *   1. every item is validated on its own ("x" f32 [rows, cols] or "text"
 *      BYTES with '\n'-separated documents, optional i32 scalar "output"),
 *      and its deadline is checked: an item that is already late gets
 *      AIMS_E_TIMEOUT instead of being served late;
 *   2. the valid items are grouped by (input kind, width, output kind), and
 *      each group becomes ONE aims_bundle_predict_rows / _texts call over the
 *      rows of all its items joined in a scratch buffer;
 *   3. the joined result is split back into each item's reply "y".
 *
 * A bad item must not fail its neighbours. Rather than re-implementing the
 * bundle's checks (width of a pipeline's input, NaN policy of its steps,
 * model kind), a group whose joined call fails is simply retried item by
 * item: the good items succeed and the bad one gets the bundle's own error
 * text. Failures are rare, so the retry costs nothing on the hot path, and
 * the service behaves exactly like a direct aims_bundle_predict_* call.
 *
 * Scratch memory (joined rows, outputs, text pointers, per-item notes) lives
 * in small scratch blocks kept on a free list in the impl: a run pops one,
 * grows it if the batch is bigger than any before, and pushes it back. After
 * warm-up a batch allocates only its replies; there is never a per-row
 * allocation. Blocks are freed with the impl.
 *
 * Swapping the bundle (aims_service_swap_bundle) must not pull the model out
 * from under running batches, and must return only when the old bundle is no
 * longer used, so the host may destroy it. A plain rwlock would let a steady
 * stream of readers starve the swapper (glibc prefers readers), so runs are
 * counted in two epochs instead: a run enters the current epoch (counter +1)
 * and reads the current bundle under the mutex; a swap installs the new
 * bundle, flips the epoch so new runs count elsewhere, and waits for the old
 * epoch's counter to reach zero. Swaps are serialised; the mutex is taken
 * twice per batch, never per row.
 *
 * Versions. Remote load/unload/weight/rollback/deploy (aims_lifecycle.h) live
 * in svc_life.c: infer_run hands each batch to aimsi_life_run first, which
 * does nothing until a lifecycle method reaches the service; from then on it
 * splits the batch between versions, each an impl of this file run plain.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../core/aimsi_core.h"
#include "aimsi_svckind.h"
#include "aimsi_node.h"
#include "authz/aimsi_authz.h"
#include "../model/aimsi_model.h"
#include "../data/aimsi_steps.h"
#include "aimsi_dispatch.h"
#include "aimsi_life.h"

/* What an item asked for; class ids are the default (0 on the wire). */
#define OUT_CLASS 0

enum item_state { IT_PENDING = 0, IT_DONE = 1 };
enum item_input { IN_ROWS = 1, IN_TEXT = 2 };

/* Per-item notes made while validating. */
typedef struct item_note {
    int state;
    int input;
    int what;           /* OUT_CLASS, AIMS_OUT_SCORES, AIMS_OUT_PROBA */
    size_t rows;
    size_t cols;        /* IN_ROWS: width; IN_TEXT: 0 */
    const void *data;   /* the "x" floats or "text" bytes */
    size_t bytes;
} item_note;

typedef struct infer_scratch {
    struct infer_scratch *next;
    item_note *notes;
    size_t notes_cap;
    size_t *group;      /* item indices of the group being run */
    size_t group_cap;
    float *x;           /* joined input rows */
    size_t x_cap;
    float *y;           /* joined outputs */
    size_t y_cap;
    const char **texts; /* joined documents */
    size_t texts_cap;
    size_t *lens;
    size_t lens_cap;
} infer_scratch;

typedef struct infer_impl {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const aims_bundle *cur; /* served bundle (borrowed) */
    aims_bundle *owned;     /* cur when a remote "swap" installed it (ours to free) */
    unsigned epoch;         /* counter new runs enter */
    size_t users[2];        /* runs inside each epoch */
    int swapping;           /* a swap is waiting for its old epoch */
    infer_scratch *free_list;
    aims_service *svc;           /* set once added (the lifecycle needs its name, node) */
    _Atomic(aimsi_life *) life;  /* versions, weights, canary (svc_life.c); NULL until used */
} infer_impl;

/* ---- small helpers ----------------------------------------------------------------- */

/* Grow *p (elements of `size` bytes) to hold at least `need`; keeps contents. */
static aims_status grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return AIMS_OK;
    }
    size_t want = *cap * 2 > need ? *cap * 2 : need;
    size_t bytes = 0;
    if (aimsi_mul_ok(want, size, &bytes) != 0) {
        want = need;
        if (aimsi_mul_ok(want, size, &bytes) != 0) {
            return aimsi_err(NULL, AIMS_E_RANGE, "infer: batch of %zu elements too large", need);
        }
    }
    void *q = aimsi_realloc(*p, bytes);
    if (q == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "infer: no memory for a batch of %zu elements",
                         need);
    }
    *p = q;
    *cap = want;
    return AIMS_OK;
}

static void scratch_free(infer_scratch *s)
{
    aimsi_free(s->notes);
    aimsi_free(s->group);
    aimsi_free(s->x);
    aimsi_free(s->y);
    aimsi_free((void *)s->texts);
    aimsi_free(s->lens);
    aimsi_free(s);
}

static infer_scratch *scratch_get(infer_impl *im)
{
    pthread_mutex_lock(&im->mu);
    infer_scratch *s = im->free_list;
    if (s != NULL) {
        im->free_list = s->next;
    }
    pthread_mutex_unlock(&im->mu);
    if (s == NULL) {
        s = aimsi_calloc(1, sizeof *s);
    }
    return s;
}

static void scratch_put(infer_impl *im, infer_scratch *s)
{
    pthread_mutex_lock(&im->mu);
    s->next = im->free_list;
    im->free_list = s;
    pthread_mutex_unlock(&im->mu);
}

static const aims_bundle *bundle_enter(infer_impl *im, unsigned *out_epoch)
{
    pthread_mutex_lock(&im->mu);
    const unsigned e = im->epoch;
    im->users[e]++;
    const aims_bundle *b = im->cur;
    pthread_mutex_unlock(&im->mu);
    *out_epoch = e;
    return b;
}

static void bundle_leave(infer_impl *im, unsigned e)
{
    pthread_mutex_lock(&im->mu);
    im->users[e]--;
    if (im->users[e] == 0 && im->swapping) {
        pthread_cond_broadcast(&im->cv);
    }
    pthread_mutex_unlock(&im->mu);
}

/* Fail one item: empty reply with an error text. */
static void item_fail(aimsi_work *w, item_note *note, aims_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static void item_fail(aimsi_work *w, item_note *note, aims_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    w->status = aimsi_work_failv(w, st, fmt, ap);
    va_end(ap);
    if (note != NULL) {
        note->state = IT_DONE;
    }
}

/* Find tensor `name`; 0 when absent. */
static int find_tensor(const aims_msg *m, const char *name, aims_dtype *dt, size_t *ndim,
                       const uint64_t **dims, const void **data, size_t *bytes)
{
    size_t i = 0;
    if (aims_msg_find(m, name, &i) != AIMS_OK) {
        return 0;
    }
    return aims_msg_get_tensor(m, i, NULL, dt, ndim, dims, data, bytes) == AIMS_OK;
}

/* ---- validation ------------------------------------------------------------------------ */

static int parse_output(aimsi_work *w, item_note *note)
{
    aims_dtype dt = 0;
    size_t ndim = 0;
    const uint64_t *dims = NULL;
    const void *data = NULL;
    size_t bytes = 0;
    note->what = OUT_CLASS;
    if (!find_tensor(w->req, "output", &dt, &ndim, &dims, &data, &bytes)) {
        return 1;
    }
    if (dt != AIMS_DT_I32 || bytes != sizeof(int32_t)) {
        item_fail(w, note, AIMS_E_INVAL, "predict: \"output\" must be an i32 scalar "
                                         "(0 class ids, 1 scores, 2 probabilities)");
        return 0;
    }
    int32_t v = 0;
    memcpy(&v, data, sizeof v);
    if (v != OUT_CLASS && v != AIMS_OUT_SCORES && v != AIMS_OUT_PROBA) {
        item_fail(w, note, AIMS_E_INVAL, "predict: \"output\" = %d is not 0 (class ids), "
                                         "1 (scores) or 2 (probabilities)", (int)v);
        return 0;
    }
    note->what = (int)v;
    return 1;
}

/* Documents in a "text" tensor: '\n' separates them; one trailing '\n' ends
 * the last document rather than starting an empty one. */
static size_t count_docs(const char *t, size_t n)
{
    size_t docs = 1;
    for (size_t i = 0; i + 1 < n; i++) {
        docs += t[i] == '\n';
    }
    return docs;
}

static void parse_predict(aimsi_work *w, item_note *note, const aims_bundle *b)
{
    aims_dtype dt = 0;
    size_t ndim = 0;
    const uint64_t *dims = NULL;
    const void *data = NULL;
    size_t bytes = 0;
    const int has_x = find_tensor(w->req, "x", &dt, &ndim, &dims, &data, &bytes);
    const int has_text = aims_msg_find(w->req, "text", &(size_t){0}) == AIMS_OK;
    if (has_x == has_text) {
        item_fail(w, note, AIMS_E_INVAL, "predict: the request needs exactly one of \"x\" "
                                         "(f32 [rows, cols]) and \"text\" (BYTES)");
        return;
    }
    if (!parse_output(w, note)) {
        return;
    }
    if (note->what == OUT_CLASS && !aimsi_model_is_classifier(aims_bundle_model(b))) {
        item_fail(w, note, AIMS_E_INVAL, "predict: the model is a regression model and has "
                                         "no class ids; ask for \"output\" = 1 (scores)");
        return;
    }
    if (has_x) {
        if (dt != AIMS_DT_F32 || ndim != 2 || dims[0] == 0 || dims[1] == 0) {
            item_fail(w, note, AIMS_E_INVAL, "predict: \"x\" must be f32 [rows, cols] with "
                                             "rows, cols >= 1");
            return;
        }
        size_t cells = 0;
        size_t want = 0;
        if ((uint64_t)(size_t)dims[0] != dims[0] || (uint64_t)(size_t)dims[1] != dims[1] ||
            aimsi_mul_ok((size_t)dims[0], (size_t)dims[1], &cells) != 0 ||
            aimsi_mul_ok(cells, sizeof(float), &want) != 0 || bytes != want) {
            item_fail(w, note, AIMS_E_INVAL, "predict: \"x\" holds %zu bytes, not rows x cols "
                                             "floats", bytes);
            return;
        }
        note->input = IN_ROWS;
        note->rows = (size_t)dims[0];
        note->cols = (size_t)dims[1];
    } else {
        (void)find_tensor(w->req, "text", &dt, &ndim, &dims, &data, &bytes);
        if (dt != AIMS_DT_BYTES || bytes == 0) {
            item_fail(w, note, AIMS_E_INVAL, "predict: \"text\" must be non-empty BYTES "
                                             "(documents separated by '\\n')");
            return;
        }
        note->input = IN_TEXT;
        note->rows = count_docs(data, bytes);
        note->cols = 0;
    }
    note->data = data;
    note->bytes = bytes;
}

static void do_info(aimsi_work *w, item_note *note, const aims_bundle *b)
{
    static const char *const keys[] = {"name", "version"};
    aims_msg_clear(w->reply);
    for (size_t i = 0; i < 2; i++) {
        const char *v = aims_bundle_meta(b, keys[i]);
        v = v != NULL ? v : "";
        const uint64_t dim = strlen(v);
        const aims_status st = aims_msg_add(w->reply, keys[i], AIMS_DT_BYTES, &dim, 1, v, 0);
        if (st != AIMS_OK) {
            item_fail(w, note, st, "info: %s", aims_errmsg());
            return;
        }
    }
    w->status = AIMS_OK;
    note->state = IT_DONE;
}

/* ---- running a group ------------------------------------------------------------------- */

/* Copy (or reduce to class ids) the `rows` x k outputs at y into w's reply. */
static void item_reply(aimsi_work *w, item_note *note, const aims_model *m, const float *y,
                       size_t k)
{
    aims_msg_clear(w->reply);
    const uint64_t dims[2] = {note->rows, k};
    void *out = NULL;
    const size_t ndim = note->what == OUT_CLASS ? 1 : 2;
    const aims_status st = aims_msg_alloc(w->reply, "y", AIMS_DT_F32, dims, ndim, &out);
    if (st != AIMS_OK) {
        item_fail(w, note, st, "predict: no room for the reply: %s", aims_errmsg());
        return;
    }
    float *o = out;
    if (note->what != OUT_CLASS) {
        memcpy(o, y, note->rows * k * sizeof *o);
    } else if (aims_model_kind_of(m) == AIMS_MODEL_KIND_LOGISTIC) {
        /* LOGISTIC scores are (0, z); predict_class says p >= 0.5, i.e. z >= 0 */
        for (size_t r = 0; r < note->rows; r++) {
            o[r] = y[r * k + 1] >= 0.0f ? 1.0f : 0.0f;
        }
    } else {
        for (size_t r = 0; r < note->rows; r++) {
            const float *v = y + r * k;
            size_t best = 0;
            for (size_t j = 1; j < k; j++) {
                best = v[j] > v[best] ? j : best;
            }
            o[r] = (float)best;
        }
    }
    w->status = AIMS_OK;
    note->state = IT_DONE;
}

/* Join the group's inputs into scratch and run one predict into s->y. */
static aims_status predict_joined(infer_scratch *s, const aims_bundle *b, const size_t *group,
                                  size_t g, size_t rows, size_t k)
{
    const item_note *first = &s->notes[group[0]];
    const aims_output what = first->what == OUT_CLASS ? AIMS_OUT_SCORES : first->what;
    size_t out_n = 0;
    if (aimsi_mul_ok(rows, k, &out_n) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "predict: %zu rows x %zu outputs overflow", rows, k);
    }
    AIMSI_TRY(grow((void **)&s->y, &s->y_cap, out_n, sizeof(float)));
    if (first->input == IN_TEXT) {
        AIMSI_TRY(grow((void **)&s->texts, &s->texts_cap, rows, sizeof(char *)));
        AIMSI_TRY(grow((void **)&s->lens, &s->lens_cap, rows, sizeof(size_t)));
        size_t r = 0;
        for (size_t i = 0; i < g; i++) {
            const item_note *nt = &s->notes[group[i]];
            const char *t = nt->data;
            size_t start = 0;
            for (size_t j = 0; j <= nt->bytes; j++) {
                if (j == nt->bytes || t[j] == '\n') {
                    if (j == nt->bytes && start == nt->bytes && j > 0) {
                        break; /* the trailing '\n' ended the last document */
                    }
                    s->texts[r] = t + start;
                    s->lens[r] = j - start;
                    r++;
                    start = j + 1;
                }
            }
        }
        return aims_bundle_predict_texts(b, what, s->texts, s->lens, rows, s->y, out_n);
    }
    const size_t cols = first->cols;
    size_t in_n = 0;
    if (aimsi_mul_ok(rows, cols, &in_n) != 0) {
        return aimsi_err(NULL, AIMS_E_RANGE, "predict: %zu rows x %zu cols overflow", rows, cols);
    }
    const float *x = NULL;
    if (g == 1 && ((uintptr_t)first->data % _Alignof(float)) == 0) {
        x = first->data; /* one aligned item: no join needed */
    } else {
        AIMSI_TRY(grow((void **)&s->x, &s->x_cap, in_n, sizeof(float)));
        size_t off = 0;
        for (size_t i = 0; i < g; i++) {
            const item_note *nt = &s->notes[group[i]];
            memcpy((unsigned char *)s->x + off, nt->data, nt->bytes);
            off += nt->bytes;
        }
        x = s->x;
    }
    return aims_bundle_predict_rows(b, what, x, rows, cols, s->y, out_n);
}

static void run_group(infer_scratch *s, const aims_bundle *b, aimsi_work *const *items,
                      const size_t *group, size_t g)
{
    const aims_model *m = aims_bundle_model(b);
    const size_t k = aims_model_output_dim(m);
    size_t rows = 0;
    for (size_t i = 0; i < g; i++) {
        rows += s->notes[group[i]].rows; /* each <= bytes of its message: no overflow */
    }
    const aims_status rc = predict_joined(s, b, group, g, rows, k);
    if (rc != AIMS_OK) {
        if (g > 1) {
            /* find the culprit(s): each item alone gets the bundle's verdict */
            for (size_t i = 0; i < g; i++) {
                run_group(s, b, items, &group[i], 1);
            }
            return;
        }
        item_fail(items[group[0]], &s->notes[group[0]], rc, "predict: %s", aims_errmsg());
        return;
    }
    size_t r0 = 0;
    for (size_t i = 0; i < g; i++) {
        item_note *nt = &s->notes[group[i]];
        item_reply(items[group[i]], nt, m, s->y + r0 * k, k);
        r0 += nt->rows;
    }
}

static int same_group(const item_note *a, const item_note *b)
{
    return a->input == b->input && a->cols == b->cols && a->what == b->what;
}

static aims_status swap_in(infer_impl *im, const aims_bundle *b, int own);
static int bundle_ok(const aims_bundle *b);

static int is_swap(const aimsi_work *w)
{
    return w->method != NULL && strcmp(w->method, "swap") == 0;
}

/* "swap" over the wire (docs/IDENT.md): the node's door admitted it only for
 * an identity the policy allows "swap" on this service (never without a
 * policy) and audits the outcome. The request's BYTES "bundle" (a saved
 * bundle file) is parsed and installed; the service owns it from then on.
 * Runs before the batch enters an epoch: a swap waits for the old epoch. */
static void do_remote_swap(infer_impl *im, aimsi_work *w)
{
    aims_dtype dt = 0;
    size_t ndim = 0;
    const void *data = NULL;
    size_t bytes = 0;
    size_t i = 0;
    aims_bundle *b = NULL;
    if (aims_msg_find(w->req, "bundle", &i) != AIMS_OK ||
        aims_msg_get_tensor(w->req, i, NULL, &dt, &ndim, NULL, &data, &bytes) != AIMS_OK ||
        dt != AIMS_DT_BYTES || bytes == 0) {
        item_fail(w, NULL, AIMS_E_INVAL, "swap: want a BYTES tensor \"bundle\" holding a "
                                         "saved bundle");
        return;
    }
    aims_status rc = aims_bundle_parse(data, bytes, &b);
    if (rc != AIMS_OK) {
        item_fail(w, NULL, rc, "swap: the bundle does not load: %s", aims_errmsg());
        return;
    }
    if (!bundle_ok(b)) {
        aims_bundle_destroy(b);
        item_fail(w, NULL, AIMS_E_INVAL, "swap: the bundle has no trained model");
        return;
    }
    rc = swap_in(im, b, 1);
    if (rc != AIMS_OK) {
        aims_bundle_destroy(b);
        item_fail(w, NULL, rc, "swap: %s", aims_errmsg());
        return;
    }
    const int32_t one = 1;
    w->status = aims_msg_add(w->reply, "swapped", AIMS_DT_I32, NULL, 0, &one, 0);
}

/* Lifecycle methods and version routing first (svc_life.c); plain otherwise. */
static void infer_run(void *impl, aimsi_work *const *items, size_t n)
{
    infer_impl *im = impl;
    if (!aimsi_life_run(&im->life, im->svc, im, items, n)) {
        aimsi_infer_run_plain(im, items, n);
    }
}

void aimsi_infer_run_plain(void *impl, aimsi_work *const *items, size_t n)
{
    infer_impl *im = impl;
    for (size_t i = 0; i < n; i++) {
        if (is_swap(items[i])) {
            do_remote_swap(im, items[i]);
        }
    }
    unsigned epoch = 0;
    const aims_bundle *b = bundle_enter(im, &epoch);
    infer_scratch *s = scratch_get(im);
    aims_status rc = s == NULL ? aimsi_err(NULL, AIMS_E_NOMEM, "infer: no memory for scratch")
                               : AIMS_OK;
    if (rc == AIMS_OK) {
        rc = grow((void **)&s->notes, &s->notes_cap, n, sizeof(item_note));
    }
    if (rc == AIMS_OK) {
        rc = grow((void **)&s->group, &s->group_cap, n, sizeof(size_t));
    }
    if (rc != AIMS_OK) {
        for (size_t i = 0; i < n; i++) {
            item_fail(items[i], NULL, rc, "infer: %s", aims_errmsg());
        }
    } else {
        const uint64_t now = aimsi_now_ns();
        for (size_t i = 0; i < n; i++) {
            aimsi_work *w = items[i];
            item_note *nt = &s->notes[i];
            memset(nt, 0, sizeof *nt);
            if (is_swap(w)) {
                nt->state = IT_DONE; /* answered above */
            } else if (w->method != NULL && strcmp(w->method, "info") == 0) {
                do_info(w, nt, b);
            } else if (w->method == NULL || strcmp(w->method, "predict") != 0) {
                item_fail(w, nt, AIMS_E_NOTFOUND, "no method %s on infer service",
                          w->method != NULL ? w->method : "(null)");
            } else if (w->deadline_ns != 0 && now >= w->deadline_ns) {
                item_fail(w, nt, AIMS_E_TIMEOUT, "predict: the deadline passed before the "
                                                 "batch started");
            } else {
                parse_predict(w, nt, b);
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (s->notes[i].state != IT_PENDING) {
                continue;
            }
            size_t g = 0;
            for (size_t j = i; j < n; j++) {
                if (s->notes[j].state == IT_PENDING && same_group(&s->notes[i], &s->notes[j])) {
                    s->group[g++] = j;
                }
            }
            run_group(s, b, items, s->group, g);
        }
    }
    if (s != NULL) {
        scratch_put(im, s);
    }
    bundle_leave(im, epoch);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void infer_destroy(void *impl)
{
    infer_impl *im = impl;
    if (im == NULL) {
        return;
    }
    while (im->free_list != NULL) {
        infer_scratch *s = im->free_list;
        im->free_list = s->next;
        scratch_free(s);
    }
    aimsi_life_free(atomic_load(&im->life));
    aims_bundle_destroy(im->owned);
    pthread_cond_destroy(&im->cv);
    pthread_mutex_destroy(&im->mu);
    aimsi_free(im);
}

/* The rows a request adds to a batch (aimsi_svc_kind.rows): "x" f32 [rows, cols]
 * gives rows, "text" its documents, anything else (info, a malformed request
 * that run() will refuse) 1. Capped so a sum over a queue cannot overflow. */
static int64_t infer_rows(const aimsi_work *w)
{
    aims_dtype dt = 0;
    size_t ndim = 0;
    const uint64_t *dims = NULL;
    const void *data = NULL;
    size_t bytes = 0;
    uint64_t r = 1;
    if (w->req == NULL || w->method == NULL || strcmp(w->method, "predict") != 0) {
        return 1;
    }
    if (find_tensor(w->req, "x", &dt, &ndim, &dims, &data, &bytes)) {
        r = ndim == 2 && dt == AIMS_DT_F32 ? dims[0] : 1;
    } else if (find_tensor(w->req, "text", &dt, &ndim, &dims, &data, &bytes) &&
               dt == AIMS_DT_BYTES && bytes > 0) {
        r = count_docs(data, bytes);
    }
    return r == 0 ? 1 : (r > (1u << 24) ? (int64_t)1 << 24 : (int64_t)r);
}

const aimsi_svc_kind aimsi_kind_infer = {
    .name = "infer",
    .batching = 1,
    .rows = infer_rows,
    .never_inline = 0,
    .run = infer_run,
    .stop = NULL,
    .destroy = infer_destroy,
};

static int bundle_ok(const aims_bundle *b)
{
    const aims_model *m = aims_bundle_model(b);
    return m != NULL && aims_model_is_trained(m);
}

aims_status aimsi_infer_create(const aims_bundle *b, void **out)
{
    if (out == NULL || !bundle_ok(b)) {
        return AIMSI_MISUSE("NULL out, or not a bundle with a trained model");
    }
    infer_impl *im = aimsi_calloc(1, sizeof *im);
    if (im == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "infer: no memory for the service");
    }
    if (pthread_mutex_init(&im->mu, NULL) != 0) {
        aimsi_free(im);
        return aimsi_err(NULL, AIMS_E_BACKEND, "infer: pthread_mutex_init failed");
    }
    if (pthread_cond_init(&im->cv, NULL) != 0) {
        pthread_mutex_destroy(&im->mu);
        aimsi_free(im);
        return aimsi_err(NULL, AIMS_E_BACKEND, "infer: pthread_cond_init failed");
    }
    im->cur = b;
    *out = im;
    return AIMS_OK;
}

aims_status aimsi_infer_swap(void *impl, const aims_bundle *b)
{
    return swap_in(impl, b, 0);
}

/* Install b; own: the service frees it (a remote swap). The bundle a
 * previous remote swap installed is freed once its epoch has drained. */
static aims_status swap_in(infer_impl *im, const aims_bundle *b, int own)
{
    if (im == NULL || !bundle_ok(b)) {
        return AIMSI_MISUSE("not an infer service, or not a bundle with a trained model");
    }
    pthread_mutex_lock(&im->mu);
    while (im->swapping) {
        pthread_cond_wait(&im->cv, &im->mu);
    }
    im->swapping = 1;
    im->cur = b;
    const unsigned old = im->epoch;
    im->epoch ^= 1u;
    while (im->users[old] > 0) {
        pthread_cond_wait(&im->cv, &im->mu);
    }
    aims_bundle *drop = im->owned;
    im->owned = own ? (aims_bundle *)(uintptr_t)b : NULL;
    im->swapping = 0;
    pthread_cond_broadcast(&im->cv);
    pthread_mutex_unlock(&im->mu);
    aims_bundle_destroy(drop);
    return AIMS_OK;
}

aims_status aims_service_add_infer(aims_node *n, const char *name, const aims_bundle *b,
                                   aims_service **out)
{
    if (n == NULL || name == NULL || out == NULL) {
        return AIMSI_MISUSE("NULL node, name or out");
    }
    void *impl = NULL;
    AIMSI_TRY(aimsi_infer_create(b, &impl));
    AIMSI_TRY(aimsi_service_add(n, name, &aimsi_kind_infer, impl, out));
    ((infer_impl *)impl)->svc = *out;
    return AIMS_OK;
}

_Atomic(aimsi_life *) *aimsi_infer_life_slot(aims_service *s, void **base)
{
    infer_impl *im = aimsi_service_impl(s, &aimsi_kind_infer);
    if (im != NULL && base != NULL) {
        *base = im;
    }
    return im != NULL ? &im->life : NULL;
}

aims_status aims_service_swap_bundle(aims_service *s, const aims_bundle *b)
{
    void *impl = aimsi_service_impl(s, &aimsi_kind_infer);
    if (impl == NULL) {
        return AIMSI_MISUSE("not an infer service");
    }
    const aims_status rc = aimsi_infer_swap(impl, b);
    aimsi_authz_audit(s->node, AIMS_AUDIT_MODEL_SWAP, "host", "", s->name, rc,
                      rc == AIMS_OK ? "" : aims_errmsg());
    return rc;
}

aims_status aimsi_infer_describe(aims_service *s, aimsi_infer_desc *out)
{
    return aimsi_infer_describe_impl(aimsi_service_impl(s, &aimsi_kind_infer), out);
}

aims_status aimsi_infer_describe_impl(void *impl, aimsi_infer_desc *out)
{
    infer_impl *im = impl;
    if (im == NULL || out == NULL) {
        return aimsi_err(NULL, AIMS_E_INVAL, "not an infer service");
    }
    memset(out, 0, sizeof(*out));
    /* Under mu the bundle cannot be swapped out (and so not destroyed). */
    pthread_mutex_lock(&im->mu);
    const aims_bundle *b = im->cur;
    const aims_model *m = aims_bundle_model(b);
    const aims_pipeline *p = aims_bundle_pipeline(b);
    out->text = p != NULL && p->family == AIMSI_FAMILY_TEXT;
    out->in_cols = out->text ? 0 : p != NULL ? p->in_w : aims_model_input_dim(m);
    out->out_dim = aims_model_output_dim(m);
    out->classifier = aimsi_model_is_classifier(m);
    const char *nm = aims_bundle_meta(b, "name");
    const char *ver = aims_bundle_meta(b, "version");
    snprintf(out->name, sizeof(out->name), "%s", nm != NULL ? nm : "");
    snprintf(out->version, sizeof(out->version), "%s", ver != NULL ? ver : "");
    pthread_mutex_unlock(&im->mu);
    return AIMS_OK;
}
