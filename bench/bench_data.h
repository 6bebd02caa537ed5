/*
 * bench_data.h -- the Fashion-MNIST split every training bench starts from:
 * the IDX files under DATA_DIR/fashion-mnist, scaled to [0, 1] through a
 * pipeline (the library's own preprocessing, as a user would). Header-only
 * (a static function), so each bench stays one translation unit.
 */
#ifndef AIMS_BENCH_DATA_H
#define AIMS_BENCH_DATA_H

#include <stdio.h>

#include <aims/aims.h>

static aims_status load_scaled(const char *dir, const char *img, const char *lab,
                               aims_dataset **out)
{
    char ip[4096];
    char lp[4096];
    snprintf(ip, sizeof ip, "%s/fashion-mnist/%s", dir, img);
    snprintf(lp, sizeof lp, "%s/fashion-mnist/%s", dir, lab);
    aims_dataset *raw = NULL;
    aims_pipeline *p = NULL;
    aims_status st = aims_dataset_load_idx(ip, lp, NULL, &raw);
    if (st == AIMS_OK) {
        st = aims_pipeline_create(&p);
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, NULL); /* factor defaults to 1/255 */
    }
    if (st == AIMS_OK) {
        st = aims_pipeline_fit_transform(p, raw, out);
    }
    aims_pipeline_destroy(p);
    aims_dataset_destroy(raw);
    return st;
}

#endif
