/*
 * blas.c -- the BLAS boundary of src/model and the library's build string.
 *
 * aims_build_info() lives here because only src/model may talk to BLAS, and
 * the build string must say which BLAS core and thread model the library runs
 * with (OpenBLAS picks its kernel at run time). It is built once, on first
 * use, under pthread_once, into static storage.
 */
#include <pthread.h>
#include <stdio.h>

#include "../codec/aimsi_codec.h"
#include "../core/aimsi_core.h"

/* OpenBLAS extensions (declared in its cblas.h; declared here so no BLAS header
 * is needed outside this file). */
extern char *openblas_get_config(void);
extern char *openblas_get_corename(void);
extern int openblas_get_num_threads(void);
extern int openblas_get_parallel(void);

static char g_info[512];
static pthread_once_t g_info_once = PTHREAD_ONCE_INIT;

static void build_info(void)
{
    static const char *const models[] = {"sequential", "pthreads", "openmp"};
    const int par = openblas_get_parallel();
    snprintf(g_info, sizeof g_info,
             "{\"version\":\"%s\",\"blas\":\"%s\",\"blas_core\":\"%s\","
             "\"blas_threads\":%d,\"blas_parallel\":\"%s\",\"zstd\":\"%s\","
             "\"cpus\":%u}",
             AIMS_VERSION_STRING, openblas_get_config(), openblas_get_corename(),
             openblas_get_num_threads(), (par >= 0 && par <= 2) ? models[par] : "unknown",
             aimsi_codec_zstd_version(), aimsi_cpu_count());
}

const char *aims_build_info(void)
{
    pthread_once(&g_info_once, build_info);
    return g_info;
}
