/*
 * aimsi_frame.h -- the wire frame every transport carries (DESIGN.md §5).
 *
 * A frame is one request, reply or control message. Layout, little-endian:
 *
 *   offset  size  field
 *   0       4     magic "AIMF"
 *   4       1     version (2; a reader refuses a newer one: AIMS_E_UNSUPPORTED;
 *                 version 1 still decodes, hdr.version says which it was)
 *   5       1     type (AIMSI_FRAME_REQUEST, _REPLY, _ERROR, _PING, _PONG, _CANCEL)
 *   6       2     flags (bit 0: payload zstd-compressed; other bits must be 0)
 *   8       8     request id (echoed by the reply)
 *   16      8     deadline: version 2: the time left, in ns, when the sender
 *                 encoded the frame (0 = none; the receiver adds it to its own
 *                 CLOCK_MONOTONIC, src/svc/wire.c); version 1 held an absolute
 *                 CLOCK_REALTIME deadline, which a host with a skewed clock misreads
 *   24      4     status (replies/errors: an aims_status; requests: 0)
 *   28      2     service name length S (1..128 for requests, else 0..128)
 *   30      2     method name length M (0..64)
 *   32      4     payload length P as stored (after compression)
 *   36      4     payload raw length R (== P when not compressed)
 *   40      4     CRC-32C of bytes [0, 40) (header integrity; payload is covered
 *                 by zstd's checksum when compressed, by the transport otherwise)
 *   44      S     service name (no NUL), then M bytes method name (both
 *                 [A-Za-z0-9_.@/-]; a method may also start with '$')
 *   44+S+M  P     payload
 *
 * The payload of REQUEST/REPLY frames is a tensor list:
 *   u32 count (<= AIMSI_FRAME_MAX_TENSORS), then per tensor:
 *   u8 dtype (AIMSI_DT_F32 = 1, _I32 = 2, _U8 = 3, _I64 = 4, _BYTES = 5),
 *   u8 ndim (0..4), u16 name length N (0..64), N bytes name,
 *   ndim x u64 dims, then pad to 8 bytes from the payload start, then the data
 *   (product(dims) x element size bytes; BYTES: element size 1).
 * ERROR frames carry a UTF-8 message (<= 1024 bytes) as the raw payload.
 *
 * Rules the layout implies: requests carry status 0; PING/PONG/CANCEL carry no
 * payload; ERROR messages are valid UTF-8 without NUL; the encoder sets the
 * flags itself (zstd level 1, only when smaller). Tensor data is 8-aligned
 * relative to the payload start, not in memory (the payload starts at 44 + S +
 * M): readers must not assume aligned pointers.
 *
 * Decoding never trusts a length: every size is checked against the bytes
 * present and against caps (max frame size is the caller's, e.g. a node setting)
 * before any allocation. Decoded tensors BORROW the decoded payload buffer (zero
 * copy); compressed payloads are decompressed into a buffer the frame owns.
 */
#ifndef AIMSI_FRAME_H
#define AIMSI_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "aimsi_codec.h"

#define AIMSI_FRAME_HEADER 44u
#define AIMSI_FRAME_VERSION 2u     /* 2: deadlines as time left (docs/WIRE.md) */
#define AIMSI_FRAME_VERSION_MIN 1u /* oldest version decode accepts */
#define AIMSI_FRAME_MAX_SERVICE 128u
#define AIMSI_FRAME_MAX_METHOD 64u
#define AIMSI_FRAME_MAX_TENSORS 64u
#define AIMSI_FRAME_MAX_NAME 64u
#define AIMSI_FRAME_MAX_NDIM 4u
#define AIMSI_FRAME_FLAG_ZSTD 1u

enum {
    AIMSI_FRAME_REQUEST = 1,
    AIMSI_FRAME_REPLY = 2,
    AIMSI_FRAME_ERROR = 3,
    AIMSI_FRAME_PING = 4,
    AIMSI_FRAME_PONG = 5,
    AIMSI_FRAME_CANCEL = 6
};

enum { AIMSI_DT_F32 = 1, AIMSI_DT_I32 = 2, AIMSI_DT_U8 = 3, AIMSI_DT_I64 = 4, AIMSI_DT_BYTES = 5 };

typedef struct aimsi_tensor {
    uint8_t dtype;
    uint8_t ndim;
    char name[AIMSI_FRAME_MAX_NAME + 1];
    uint64_t dims[AIMSI_FRAME_MAX_NDIM];
    const void *data; /* borrowed (encode: caller's memory; decode: the frame's payload) */
    size_t bytes;
} aimsi_tensor;

typedef struct aimsi_frame_hdr {
    uint8_t type;
    uint16_t flags;
    uint64_t request_id;
    uint64_t deadline_ns; /* the raw field: time left in ns (version 2), see above */
    int32_t status;
    char service[AIMSI_FRAME_MAX_SERVICE + 1];
    char method[AIMSI_FRAME_MAX_METHOD + 1];
    uint8_t version; /* decode: the frame's; encode: 0 = AIMSI_FRAME_VERSION */
} aimsi_frame_hdr;

/* Bytes needed to encode the header + names of the first frame in buf, once
 * at least AIMSI_FRAME_HEADER bytes are present: returns AIMS_OK and sets
 * *out_total to the full frame length (header + names + stored payload), or
 * AIMS_E_CORRUPT / AIMS_E_UNSUPPORTED / AIMS_E_RANGE (> max_frame). Transports
 * use it to know how much to read. */
aims_status aimsi_frame_peek(const void *buf, size_t len, size_t max_frame, size_t *out_total);
/* The type of a frame whose header aimsi_frame_peek accepted, and its request
 * id in *request_id -- no second check, for a reader that sorts the frames of
 * one read before it decodes them (the client's reply bursts). */
uint8_t aimsi_frame_peek_id(const void *buf, uint64_t *request_id);

/* Encode a frame into out (appended). Payload: n tensors (REQUEST/REPLY) or the
 * UTF-8 message in `message` (ERROR). Payloads whose raw size is at least
 * compress_above bytes (0 = never) are zstd-compressed when that makes them smaller. */
aims_status aimsi_frame_encode(const aimsi_frame_hdr *hdr, const aimsi_tensor *tensors,
                               size_t n, const char *message, size_t compress_above,
                               aimsi_buf *out);

/* A decoded frame. Tensors borrow `payload`, which points into the input bytes
 * (uncompressed) or into `owned` (decompressed); keep the input alive as long
 * as the frame when it was not compressed. */
typedef struct aimsi_frame {
    aimsi_frame_hdr hdr;
    const uint8_t *payload;
    size_t payload_len;
    void *owned; /* aimsi_malloc'd decompressed payload, or NULL */
    size_t n_tensors;
    aimsi_tensor tensors[AIMSI_FRAME_MAX_TENSORS];
    const char *message; /* ERROR frames: points into payload, message_len bytes */
    size_t message_len;
} aimsi_frame;

/* Decode exactly one frame occupying all of [buf, buf+len). max_raw caps the
 * decompressed payload. On failure nothing is allocated. */
aims_status aimsi_frame_decode(const void *buf, size_t len, size_t max_raw, aimsi_frame *out);
/* Release what decode allocated (NULL-safe on a zeroed frame). */
void aimsi_frame_release(aimsi_frame *f);

#endif /* AIMSI_FRAME_H */
