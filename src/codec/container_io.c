/*
 * container_io.c -- the glue every file kind shared: saving an object as a
 * container, parsing one from memory, loading one from a file, and arrays of
 * 4- or 8-byte words stored little-endian whatever the host's byte order.
 *
 * Why. Datasets, pipelines, models and bundles each wrote the same
 * create-writer / fill / save / destroy and open-reader / read / destroy
 * sequences, and the dataset file carried its own byte swapping while the
 * model and checkpoint files wrote host-order floats (so only a
 * little-endian host could read them back). One copy here keeps the error
 * paths identical (the reader and writer are always destroyed, the file is
 * written atomically) and puts byte order where DESIGN §1 puts parsing: the
 * codec.
 *
 * How. The callers pass a fill function (object -> sections) or a take
 * function (reader -> new object into *out); both are plain C callbacks so
 * this layer knows nothing of datasets or models. Word arrays are copied and
 * swapped only on a big-endian host; on little-endian hosts memory and file
 * share one layout and the bytes go straight through.
 */
#include <string.h>

#include "aimsi_codec.h"

static int host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

void aimsi_le_words(void *data, size_t n, size_t width)
{
    if (host_is_le()) {
        return;
    }
    unsigned char *p = data;
    for (size_t i = 0; i < n; i++, p += width) {
        for (size_t a = 0, b = width - 1; a < b; a++, b--) {
            const unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
    }
}

aims_status aimsi_cw_add_words(aimsi_cwriter *w, uint32_t tag, const void *data, size_t n,
                               size_t width)
{
    const size_t bytes = n * width;
    if (host_is_le()) {
        return aimsi_cw_add(w, tag, data, bytes);
    }
    void *tmp = aimsi_malloc(bytes > 0 ? bytes : 1);
    if (tmp == NULL) {
        return aimsi_err(NULL, AIMS_E_NOMEM, "container: out of memory for %zu bytes", bytes);
    }
    memcpy(tmp, data, bytes);
    aimsi_le_words(tmp, n, width);
    const aims_status rc = aimsi_cw_add(w, tag, tmp, bytes);
    aimsi_free(tmp);
    return rc;
}

aims_status aimsi_container_save(uint32_t kind, int level, const void *obj, aimsi_cw_fill_fn fill,
                                 const char *path)
{
    aimsi_cwriter *w = NULL;
    AIMSI_TRY(aimsi_cw_create(kind, level, &w));
    aims_status rc = fill(obj, w);
    if (rc == AIMS_OK) {
        rc = aimsi_cw_save(w, path);
    }
    aimsi_cw_destroy(w);
    return rc;
}

aims_status aimsi_container_parse(uint32_t kind, const void *data, size_t size,
                                  aimsi_cr_take_fn take, void *out)
{
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_mem(data, size, 0, kind, &r));
    const aims_status rc = take(r, out);
    aimsi_cr_destroy(r);
    return rc;
}

aims_status aimsi_container_load(uint32_t kind, const char *path, uint64_t max_bytes,
                                 aimsi_cr_take_fn take, void *out)
{
    aimsi_creader *r = NULL;
    AIMSI_TRY(aimsi_cr_open_file(path, max_bytes, kind, &r));
    const aims_status rc = take(r, out);
    aimsi_cr_destroy(r);
    return rc;
}
