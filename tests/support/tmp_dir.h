/*
 * tmp_dir.h -- a fresh directory per test case, removed after it.
 *
 * The store and jobs tests (test_jobs, test_jobs_cache, test_jobs_ckpt) each
 * give a case its own directory under $TMPDIR (or /tmp) so a case never sees
 * another's checkpoints or blobs, and remove it whole in the tear-down. The
 * helpers fail the case through cmocka, so include <cmocka.h> first.
 */
#ifndef AIMS_TEST_TMP_DIR_H
#define AIMS_TEST_TMP_DIR_H

#include <stdio.h>
#include <stdlib.h>

/* Make "<TMPDIR or /tmp>/aims-<tag>-XXXXXX" into dir (n bytes). */
static inline void tmp_dir_make(char *dir, size_t n, const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, n, "%s/aims-%s-XXXXXX", base != NULL ? base : "/tmp", tag);
    assert_non_null(mkdtemp(dir));
}

/* Remove dir and everything below it. */
static inline void tmp_dir_remove(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

#endif
