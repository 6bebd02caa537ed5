/*
 * wire.c -- the clocks a deadline crosses.
 *
 * Inside a process every deadline is CLOCK_MONOTONIC (immune to clock steps);
 * on the wire it is absolute CLOCK_REALTIME, the only clock two processes (or
 * machines with NTP) share. The conversions go through "now" on both clocks,
 * so a deadline keeps its remaining time across the hop; 0 means "none" on
 * both sides. A deadline already in the past stays in the past (clamped to 1,
 * never turned into "none").
 */
#include <time.h>

#include "../core/aimsi_core.h"
#include "aimsi_wire.h"

uint64_t aimsi_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Shift `t` from one clock to another given "now" on both. */
static uint64_t shift(uint64_t t, uint64_t from_now, uint64_t to_now)
{
    if (t == 0) {
        return 0;
    }
    if (t <= from_now) {
        const uint64_t late = from_now - t;
        return to_now > late ? to_now - late : 1;
    }
    const uint64_t left = t - from_now;
    return to_now > UINT64_MAX - left ? UINT64_MAX : to_now + left;
}

uint64_t aimsi_deadline_to_wire(uint64_t mono_ns)
{
    return shift(mono_ns, aimsi_now_ns(), aimsi_realtime_ns());
}

uint64_t aimsi_deadline_from_wire(uint64_t real_ns)
{
    return shift(real_ns, aimsi_realtime_ns(), aimsi_now_ns());
}
