/*
 * aimsi_wire.h -- the clocks a deadline crosses (wire.c): CLOCK_MONOTONIC
 * inside a process, CLOCK_REALTIME on the wire. wire.c's top comment explains
 * the conversion.
 */
#ifndef AIMSI_WIRE_H
#define AIMSI_WIRE_H

#include <stdint.h>

/* CLOCK_REALTIME ns (the wire's deadline clock) and conversions to/from the
 * monotonic clock used inside the process (0 stays 0). */
uint64_t aimsi_realtime_ns(void);
uint64_t aimsi_deadline_to_wire(uint64_t mono_ns);
uint64_t aimsi_deadline_from_wire(uint64_t real_ns);

#endif /* AIMSI_WIRE_H */
