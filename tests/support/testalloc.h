/*
 * testalloc.h -- the counting, failure-injecting allocator every test installs.
 *
 * Works through the public aims_set_allocator(), so the same file serves the
 * white-box unit tests (static library) and the black-box API tests (libaims.so).
 */
#ifndef AIMS_TESTALLOC_H
#define AIMS_TESTALLOC_H

#include <aims/aims.h>

/* Install the counting allocator (idempotent). */
void ta_install(void);
/* Make the n-th allocation from now fail (1-based); 0 = never. Resets the count. */
void ta_fail_at(long n);
/* Allocations since the last ta_fail_at / ta_install. */
long ta_allocs(void);
/* Non-zero when an injected failure happened since the last ta_fail_at. */
int ta_failed(void);

/* cmocka setup / teardown: install + reset; teardown asserts every block was freed. */
int ta_setup(void **state);
int ta_teardown(void **state);

/* Allocation-failure loop: for n = 1, 2, ...: fail the n-th allocation and run
 * op(ctx). op must release everything it created; after each run the live block
 * count must be back where it was. Stops when op succeeds with no injected
 * failure. A run that "succeeds" despite an injected failure is fine only if the
 * code recovered (e.g. a fallback path); a run that returns an error other than
 * AIMS_E_NOMEM under injection fails the test. */
typedef aims_status (*ta_op)(void *ctx);
void ta_fail_loop(const char *name, ta_op op, void *ctx);

#endif
