/*
 * aimsi_wire.h -- the clocks a deadline crosses (wire.c): CLOCK_MONOTONIC
 * inside a process, "time left" on the wire (frame version 2). wire.c's top
 * comment explains the conversion, the handler's ambient deadline and the
 * answer to version-1 peers.
 */
#ifndef AIMSI_WIRE_H
#define AIMSI_WIRE_H

#include <stdint.h>

#include "../codec/aimsi_frame.h"

/* CLOCK_REALTIME ns (timestamps for audit and epochs; no longer deadlines). */
uint64_t aimsi_realtime_ns(void);

/* Pure conversions. encode: a monotonic deadline -> the frame's field at
 * sender time now_mono (0 -> 0; already past -> 1). decode: the field -> a
 * monotonic deadline at receiver time now_mono (0 -> 0; 1 (late) -> 1, an
 * instant always past; saturating). */
uint64_t aimsi_deadline_encode(uint64_t deadline_mono, uint64_t now_mono);
uint64_t aimsi_deadline_decode(uint64_t left_ns, uint64_t now_mono);
/* The same at "now" (aimsi_now_ns). */
uint64_t aimsi_deadline_to_wire(uint64_t mono_ns);
uint64_t aimsi_deadline_from_wire(uint64_t left_ns);

/* "Now" for a request frame on a node's I/O thread: one clock read per read
 * burst, not three per frame. The first frame of a burst takes the read's
 * time (aimsi_transport_tl_burst->now_ns); a later one the end of the
 * previous frame's inline run (handed back by aimsi_svc_dispatch and given to
 * aimsi_frame_clock_after), or the clock when that frame did not run inline.
 * Outside a burst (host transports), the clock. What it costs: a frame's
 * deadline and its service's run time count from a reading up to one reply
 * send earlier than the frame's own start (microseconds). */
uint64_t aimsi_frame_clock(void);
void aimsi_frame_clock_after(uint64_t end);

/* The calling thread's ambient deadline (a running handler's request's):
 * enter sets it and returns the previous one for leave; cap returns
 * min(deadline, ambient) with 0 = none on both. */
uint64_t aimsi_deadline_enter(uint64_t deadline_mono);
void aimsi_deadline_leave(uint64_t prev);
uint64_t aimsi_deadline_cap(uint64_t deadline_mono);

/* Append to out the ERROR frame (in the request's own version) that answers
 * a REQUEST of an older frame version: AIMS_E_UNSUPPORTED with the reason. */
aims_status aimsi_wire_refuse_v1(const aimsi_frame_hdr *req, const char *node, aimsi_buf *out);

#endif /* AIMSI_WIRE_H */
