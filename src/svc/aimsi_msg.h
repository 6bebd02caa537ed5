/*
 * aimsi_msg.h -- the message contract (msg.c): the layout of aims_msg, its
 * conversion to and from wire frames (src/codec/aimsi_frame.h), and the typed
 * request getters and reply setters every service kind uses.
 *
 * Why its own header: every svc file passes messages around, few need the
 * node, the client or the transports; the layout is shared because nodes and
 * services embed messages (queued requests, spare replies) without a
 * handle allocation each.
 */
#ifndef AIMSI_MSG_H
#define AIMSI_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "aims/aims_svc.h"
#include "../core/aimsi_core.h"
#include "../codec/aimsi_frame.h"

/* Handle magics (AIMSI_MAGIC_MSG, _NODE, _SERVICE, _CLIENT): aimsi_core.h. */

#define AIMSI_MSG_MAX_ERROR 1024u

typedef struct aimsi_mtensor {
    char name[AIMS_MSG_MAX_NAME + 1];
    uint8_t dtype;
    uint8_t ndim;
    uint64_t dims[AIMS_MSG_MAX_NDIM];
    const void *data; /* borrowed, or == owned */
    size_t bytes;
    void *owned;      /* aimsi_malloc'd storage, or NULL when borrowed */
} aimsi_mtensor;

struct aims_msg {
    aimsi_obj obj;
    size_t n;
    aimsi_mtensor t[AIMS_MSG_MAX_TENSORS];
    char *error;      /* aimsi_malloc'd UTF-8, or NULL */
    void *hold;       /* storage the borrowed tensors point into (a decoded
                         frame's bytes), freed with the message, or NULL */
    aimsi_frame *frame; /* decoded frame whose payload `hold`/tensors use, or NULL */
};

/* Element size of a dtype (0 for an unknown one). */
size_t aimsi_dtype_size(uint8_t dtype);

/* Fill `tensors` (cap AIMS_MSG_MAX_TENSORS) with borrowed views of m's tensors
 * for aimsi_frame_encode. Returns the count. */
size_t aimsi_msg_views(const aims_msg *m, aimsi_tensor *tensors);

/* Make `m` (cleared first) describe the tensors of a decoded REQUEST/REPLY frame.
 * Takes ownership of `bytes` (the encoded frame, aimsi_malloc'd) and of `f`'s
 * owned payload: the message borrows into them and frees them with itself.
 * On failure m is left empty and bytes/f are released too. */
aims_status aimsi_msg_adopt_frame(aims_msg *m, void *bytes, aimsi_frame *f);

/* Deep copy src into dst (cleared first): every tensor copied into storage dst
 * owns. Used when a borrowed request must outlive its caller (queued work). */
aims_status aimsi_msg_copy(aims_msg *dst, const aims_msg *src);

/* Move src's contents into dst (cleared first); src ends empty. No allocation. */
void aimsi_msg_move(aims_msg *dst, aims_msg *src);

/* Typed getters for request tensors, with the error text a caller should see
 * ("request tensor 'x' is missing" / "... must be i64 scalar"): a BYTES tensor
 * (any ndim <= 1), an integer scalar (I64 or I32, ndim 0 or one element). */
aims_status aimsi_msg_bytes(const aims_msg *m, const char *name, const char **out,
                            size_t *out_len);
aims_status aimsi_msg_int(const aims_msg *m, const char *name, int64_t *out);
/* Append a BYTES tensor / an i64 scalar (copied). */
aims_status aimsi_msg_put_bytes(aims_msg *m, const char *name, const void *p, size_t len);
aims_status aimsi_msg_put_i64(aims_msg *m, const char *name, int64_t v);

/* Initialise / release a message embedded in another struct (no handle alloc). */
void aimsi_msg_init(aims_msg *m);
void aimsi_msg_fini(aims_msg *m);

#endif /* AIMSI_MSG_H */
