/*
 * wire.c -- the clocks a deadline crosses.
 *
 * Inside a process every deadline is CLOCK_MONOTONIC (immune to clock steps).
 * On the wire (frame version 2, docs/WIRE.md) a REQUEST carries the time the
 * call has LEFT when the sender encodes it, in ns, as gRPC's grpc-timeout does:
 * the receiver adds it to its own CLOCK_MONOTONIC on arrival. No wall clock is
 * involved, so a node whose realtime clock is off by seconds neither drops
 * work that still has time nor serves work whose caller gave up (version 1
 * carried an absolute CLOCK_REALTIME deadline and did both).
 *
 * The one-way delay (queueing in the sender's and receiver's socket buffers,
 * the network) is unknown and is NOT subtracted: the receiver's deadline is
 * later than the caller's by that delay. On loopback it is microseconds; on
 * a network, a caller that must not be over-served subtracts its own margin.
 * The caller stops waiting at its own deadline either way.
 *
 * Both conversions are pure functions of (value, now) so they are testable
 * without clocks; 0 means "none" on both sides, and a deadline already past
 * stays past (1 ns left, never turned into "none").
 *
 * Passing on what is left. While a user handler runs, the request's deadline
 * is the thread's "ambient" deadline (aimsi_deadline_enter/leave around the
 * handler, service.c): a call the handler makes with aims_client_* on that
 * thread gets min(its own timeout, what the request has left), so a chain
 * node A -> handler -> node B never gives B more time than A's caller has.
 *
 * Which "now". The sender counts what is left from its attempt's start (its
 * one clock read per attempt, re-read after a dial: microseconds earlier than
 * the encode); a node counts from the time the read that brought the frame
 * returned, or the end of the previous inline run of that read burst
 * (aimsi_frame_clock): one clock read per burst instead of three per frame
 * on a pipelined connection. Both err by microseconds, well inside the
 * one-way delay this scheme already ignores.
 *
 * Version 1 peers. A node that decodes a version-1 REQUEST answers with an
 * ERROR frame in version 1 (which the old peer can read): AIMS_E_UNSUPPORTED
 * and a sentence saying why, instead of guessing at an absolute deadline.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../core/aimsi_core.h"
#include "aimsi_wire.h"
#include "transport/aimsi_transport.h"

uint64_t aimsi_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t aimsi_deadline_encode(uint64_t deadline_mono, uint64_t now_mono)
{
    if (deadline_mono == 0) {
        return 0;
    }
    return deadline_mono > now_mono ? deadline_mono - now_mono : 1u;
}

uint64_t aimsi_deadline_decode(uint64_t left_ns, uint64_t now_mono)
{
    if (left_ns == 0) {
        return 0;
    }
    if (left_ns == 1) {
        /* late (the sender's deadline had passed): an instant always past,
         * whatever "now" is -- a node reads its clock once per read burst, so
         * its now for a frame may be microseconds early (aimsi_frame_clock) */
        return 1;
    }
    return now_mono > UINT64_MAX - left_ns ? UINT64_MAX : now_mono + left_ns;
}

uint64_t aimsi_deadline_to_wire(uint64_t mono_ns)
{
    return aimsi_deadline_encode(mono_ns, aimsi_now_ns());
}

uint64_t aimsi_deadline_from_wire(uint64_t left_ns)
{
    return aimsi_deadline_decode(left_ns, aimsi_now_ns());
}

/* ---- one clock read per read burst (node.c) -------------------------------------- */

static _Thread_local struct {
    uint64_t seq, now;
} t_fclock;

uint64_t aimsi_frame_clock(void)
{
    const aimsi_burst *tb = aimsi_transport_tl_burst;
    if (tb == NULL || tb->now_ns == 0) {
        return aimsi_now_ns();
    }
    if (t_fclock.seq != tb->seq) {
        t_fclock.seq = tb->seq;
        t_fclock.now = 0;
        return tb->now_ns;
    }
    return t_fclock.now != 0 ? t_fclock.now : aimsi_now_ns();
}

void aimsi_frame_clock_after(uint64_t end)
{
    const aimsi_burst *tb = aimsi_transport_tl_burst;
    t_fclock.now = tb != NULL && tb->more ? end : 0;
}

/* ---- the ambient deadline of a running handler ---------------------------------- */

static _Thread_local uint64_t t_ambient; /* CLOCK_MONOTONIC, 0 = none */

uint64_t aimsi_deadline_enter(uint64_t deadline_mono)
{
    const uint64_t prev = t_ambient;
    t_ambient = deadline_mono;
    return prev;
}

void aimsi_deadline_leave(uint64_t prev)
{
    t_ambient = prev;
}

uint64_t aimsi_deadline_cap(uint64_t deadline_mono)
{
    const uint64_t a = t_ambient;
    if (a == 0) {
        return deadline_mono;
    }
    return deadline_mono == 0 || a < deadline_mono ? a : deadline_mono;
}

/* ---- version-1 peers -------------------------------------------------------------- */

aims_status aimsi_wire_refuse_v1(const aimsi_frame_hdr *req, const char *node, aimsi_buf *out)
{
    char text[320];
    snprintf(text, sizeof text,
             "node %.64s speaks frame version %u: version %u frames (absolute CLOCK_REALTIME "
             "deadlines) are refused; the deadline field now carries the time left "
             "(docs/WIRE.md): upgrade libaims on this client",
             node != NULL ? node : "", AIMSI_FRAME_VERSION, (unsigned)req->version);
    aimsi_frame_hdr h;
    memset(&h, 0, sizeof h);
    h.version = req->version; /* in words the old peer can decode */
    h.type = AIMSI_FRAME_ERROR;
    h.request_id = req->request_id;
    h.status = (int32_t)AIMS_E_UNSUPPORTED;
    return aimsi_frame_encode(&h, NULL, 0, text, 0, out);
}
