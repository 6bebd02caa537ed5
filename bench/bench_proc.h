/*
 * bench_proc.h -- what the pipelined-throughput programs share (bench_pipe.c
 * and peers/peer_zmq_pipe.c, which must not link libaims): a nanosecond
 * monotonic clock, the 1-minute load average, and a process's CPU seconds.
 * Header-only (static functions), so each program stays one translation unit.
 */
#ifndef AIMS_BENCH_PROC_H
#define AIMS_BENCH_PROC_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double load1(void)
{
    double l = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) {
            l = -1.0;
        }
        fclose(f);
    }
    return l;
}

/* CPU seconds (user + system) of process `pid` so far, from /proc (10 ms
 * ticks): next to calls/s on a shared machine, CPU per call does not depend
 * on how much of a core the run got. */
static inline double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) {
        return 0;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

#endif
