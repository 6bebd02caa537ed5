/*
 * replay_main.c -- runs a fuzz target over files, so every corpus is a
 * regression test under `meson test` (no libFuzzer needed).
 *
 * Each argument is a file or a directory whose regular files are replayed
 * (not recursively, in readdir order). Inputs are copied into an exact-size
 * heap block so AddressSanitizer catches any read past the end, as libFuzzer
 * would. Silent on success apart from a final "replayed N inputs" line; a
 * path that is missing or cannot be read is an error (exit 1, never 77
 * "skipped"): a lost corpus must not pass as a test that ran. Dot-files
 * (.gitkeep) are ignored.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 4096;
    size_t len = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        if (len == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        const size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            break;
        }
    }
    if (buf != NULL && ferror(f)) {
        fprintf(stderr, "replay: %s: read error\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    if (buf == NULL) {
        fprintf(stderr, "replay: %s: out of memory\n", path);
        return -1;
    }
    /* Exact-size copy: one byte past the input is outside the allocation. */
    uint8_t *exact = malloc(len > 0 ? len : 1);
    if (exact == NULL) {
        free(buf);
        fprintf(stderr, "replay: %s: out of memory\n", path);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int replay_dir(const char *dir, long *count)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (const struct dirent *e = readdir(d); rc == 0 && e != NULL; e = readdir(d)) {
        if (e->d_name[0] == '.') {
            continue; /* ".", ".." and dot-files such as .gitkeep */
        }
        const size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (p == NULL) {
            rc = -1;
            break;
        }
        snprintf(p, n, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            rc = replay_file(p);
            if (rc == 0) {
                (*count)++;
            }
        }
        free(p);
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    long count = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        const int rc = S_ISDIR(st.st_mode) ? replay_dir(argv[i], &count)
                                           : replay_file(argv[i]);
        if (rc != 0) {
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            count++;
        }
    }
    printf("replayed %ld inputs\n", count);
    return 0;
}
