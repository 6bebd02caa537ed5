/*
 * version.c -- run-time version queries (the build string lives in
 * src/model/blas.c, the one module allowed to ask BLAS about itself).
 */
#include "aimsi_core.h"

unsigned aims_version_number(void)
{
    return AIMS_VERSION_NUMBER;
}

const char *aims_version_string(void)
{
    return AIMS_VERSION_STRING;
}
