/*
 * alloc.c -- the allocator hook.
 *
 * Every allocation in src/ goes through aimsi_malloc/realloc/free so a host can
 * route libaims memory to its own allocator, and so tests can count blocks and
 * inject failures. We keep one atomic count of live blocks: it costs one atomic
 * add per allocation, which is noise next to what the allocations are for, and
 * it lets aims_set_allocator() refuse to swap allocators while blocks from the
 * old one are still out (freeing them with the new one would be a crash).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "aimsi_core.h"

static void *libc_malloc(void *user, size_t size)
{
    (void)user;
    return malloc(size);
}

static void *libc_realloc(void *user, void *ptr, size_t size)
{
    (void)user;
    return realloc(ptr, size);
}

static void libc_free(void *user, void *ptr)
{
    (void)user;
    free(ptr);
}

static aims_malloc_fn g_malloc = libc_malloc;
static aims_realloc_fn g_realloc = libc_realloc;
static aims_free_fn g_free = libc_free;
static void *g_user;
static atomic_size_t g_live;

aims_status aims_set_allocator(aims_malloc_fn malloc_fn, aims_realloc_fn realloc_fn,
                               aims_free_fn free_fn, void *user)
{
    const int n_null = (malloc_fn == NULL) + (realloc_fn == NULL) + (free_fn == NULL);
    if (n_null != 0 && n_null != 3) {
        return aimsi_err(NULL, AIMS_E_INVAL,
                         "aims_set_allocator: give all three functions or none");
    }
    if (atomic_load(&g_live) != 0) {
        return aimsi_err(NULL, AIMS_E_STATE,
                         "aims_set_allocator: %zu blocks from the current allocator are live",
                         (size_t)atomic_load(&g_live));
    }
    if (n_null == 3) {
        g_malloc = libc_malloc;
        g_realloc = libc_realloc;
        g_free = libc_free;
        g_user = NULL;
    } else {
        g_malloc = malloc_fn;
        g_realloc = realloc_fn;
        g_free = free_fn;
        g_user = user;
    }
    return AIMS_OK;
}

size_t aims_alloc_live(void)
{
    return atomic_load(&g_live);
}

void *aimsi_malloc(size_t size)
{
    void *p = g_malloc(g_user, size == 0 ? 1 : size);
    if (p != NULL) {
        atomic_fetch_add(&g_live, 1);
    }
    return p;
}

void *aimsi_calloc(size_t n, size_t size)
{
    size_t total;
    if (aimsi_mul_ok(n, size, &total) != 0) {
        return NULL;
    }
    void *p = aimsi_malloc(total);
    if (p != NULL) {
        memset(p, 0, total);
    }
    return p;
}

void *aimsi_realloc(void *ptr, size_t size)
{
    if (ptr == NULL) {
        return aimsi_malloc(size);
    }
    /* The live count is unchanged: one block in, one block out. */
    return g_realloc(g_user, ptr, size == 0 ? 1 : size);
}

void aimsi_free(void *ptr)
{
    if (ptr == NULL) {
        return;
    }
    atomic_fetch_sub(&g_live, 1);
    g_free(g_user, ptr);
}

void aims_free(void *ptr)
{
    aimsi_free(ptr);
}

char *aimsi_strndup(const char *s, size_t n)
{
    char *d = aimsi_malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *aimsi_strdup(const char *s)
{
    return aimsi_strndup(s, strlen(s));
}

int aimsi_mul_ok(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) {
        return -1;
    }
    *out = a * b;
    return 0;
}

int aimsi_grow(void **arr, size_t *cap, size_t n, size_t elem, size_t first)
{
    if (n < *cap) {
        return 0;
    }
    size_t want = 0;
    const size_t next = *cap ? *cap : first / 2;
    if (next > SIZE_MAX / 2 || aimsi_mul_ok(next * 2, elem, &want) != 0) {
        return -1;
    }
    void *g = aimsi_realloc(*arr, want);
    if (g == NULL) {
        return -1;
    }
    *arr = g;
    *cap = next * 2;
    return 0;
}

void aimsi_hint_hugepages(void *p, size_t bytes)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (p == NULL || bytes < 4 * huge) {
        return;
    }
    const uintptr_t begin = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    const uintptr_t end = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (end > begin) {
        (void)madvise((void *)begin, (size_t)(end - begin), MADV_HUGEPAGE);
    }
#else
    (void)p;
    (void)bytes;
#endif
}
