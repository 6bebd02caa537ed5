/*
 * rng.c -- a small, fast, seedable RNG (xoshiro256**, seeded with splitmix64).
 *
 * Each handle that needs randomness owns an aimsi_rng, so results depend only
 * on the seed the host gave, never on other threads or global state.
 */
#include <time.h>

#include "aimsi_core.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void aimsi_rng_seed(aimsi_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        rng->s[i] = splitmix64(&x);
    }
}

uint64_t aimsi_rng_next(aimsi_rng *rng)
{
    uint64_t *s = rng->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t aimsi_rng_below(aimsi_rng *rng, uint64_t n)
{
    /* Rejection sampling: draw until the value falls in the largest multiple of n. */
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do {
        v = aimsi_rng_next(rng);
    } while (v >= limit);
    return v % n;
}

double aimsi_rng_unit(aimsi_rng *rng)
{
    return (double)(aimsi_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t aimsi_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct timespec aimsi_mono_after_ms(uint64_t ms)
{
    const uint64_t at = aimsi_now_ns() + ms * 1000000u;
    struct timespec ts;
    ts.tv_sec = (time_t)(at / 1000000000u);
    ts.tv_nsec = (long)(at % 1000000000u);
    return ts;
}
