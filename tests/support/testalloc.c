/*
 * testalloc.c -- counting allocator with failure injection (see testalloc.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "testalloc.h"

static atomic_long g_count;
static atomic_long g_fail_at;
static atomic_int g_failed;
static int g_installed;

static int should_fail(void)
{
    const long n = atomic_fetch_add(&g_count, 1) + 1;
    const long at = atomic_load(&g_fail_at);
    if (at > 0 && n == at) {
        atomic_store(&g_failed, 1);
        return 1;
    }
    return 0;
}

static void *ta_malloc(void *user, size_t size)
{
    (void)user;
    return should_fail() ? NULL : malloc(size);
}

static void *ta_realloc(void *user, void *ptr, size_t size)
{
    (void)user;
    return should_fail() ? NULL : realloc(ptr, size);
}

static void ta_free(void *user, void *ptr)
{
    (void)user;
    free(ptr);
}

void ta_install(void)
{
    if (!g_installed) {
        if (aims_set_allocator(ta_malloc, ta_realloc, ta_free, NULL) != AIMS_OK) {
            fprintf(stderr, "ta_install: %s\n", aims_errmsg());
            abort();
        }
        g_installed = 1;
    }
    ta_fail_at(0);
}

void ta_fail_at(long n)
{
    atomic_store(&g_fail_at, n);
    atomic_store(&g_count, 0);
    atomic_store(&g_failed, 0);
}

long ta_allocs(void)
{
    return atomic_load(&g_count);
}

int ta_failed(void)
{
    return atomic_load(&g_failed);
}

int ta_setup(void **state)
{
    (void)state;
    ta_install();
    return 0;
}

int ta_teardown(void **state)
{
    (void)state;
    ta_fail_at(0);
    const size_t live = aims_alloc_live();
    if (live != 0) {
        fprintf(stderr, "ta_teardown: %zu libaims blocks still live (leak)\n", live);
        return -1;
    }
    return 0;
}

void ta_fail_loop(const char *name, ta_op op, void *ctx)
{
    ta_install();
    const size_t base = aims_alloc_live();
    for (long n = 1; n < 1000000; n++) {
        ta_fail_at(n);
        const aims_status rc = op(ctx);
        const int injected = ta_failed();
        ta_fail_at(0);
        const size_t live = aims_alloc_live();
        if (live != base) {
            fail_msg("%s: failing allocation %ld leaked %ld blocks (rc=%d: %s)", name, n,
                     (long)live - (long)base, (int)rc, aims_errmsg());
        }
        if (!injected) {
            if (rc != AIMS_OK) {
                fail_msg("%s: failed without an injected failure: rc=%d %s", name, (int)rc,
                         aims_errmsg());
            }
            return; /* every allocation point has been tried */
        }
        if (rc != AIMS_OK && rc != AIMS_E_NOMEM) {
            fail_msg("%s: failing allocation %ld gave rc=%d (%s), want AIMS_E_NOMEM", name, n,
                     (int)rc, aims_errmsg());
        }
    }
    fail_msg("%s: did not finish within 1e6 allocations", name);
}
