/*
 * bench_step.c -- where one P1 training step's time goes (issue 15 item 6,
 * docs/kernels.md): the 784-256(ReLU)-10 MLP at batch 128, SGD lr 0.1
 * momentum 0.9 (or Adam), timed phase by phase through the trainer's own
 * step functions (gather, forward, loss gradient, backward with the fused
 * update).
 *
 * usage: bench_step DATA_DIR [PREC [THREADS [OPT [EPOCHS [WPK]]]]]
 *        PREC 0 fp32 | 1 bf16; OPT 0 SGD | 1 Adam; WPK 0: the forward packs
 *        W every step instead of reading the update's panels, 1 (default):
 *        panels for bf16, 2: for fp32 too (A/B in one binary)
 *
 * Why per-phase minima and medians: this machine is shared, and a phase's
 * minimum over a few thousand steps is what it costs when nothing else
 * runs, while the median shows what load adds. Internal API (links the
 * static library); a measurement tool, never part of `meson test`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/aimsi_train.h"

#include "bench_data.h"
#include "bench_util.h"

/* microseconds on the monotonic clock */
static double now_us(void)
{
    return now_s() * 1e6;
}

enum { PHASES = 5 };
static const char *const g_names[PHASES] = {"gather", "forward", "loss", "backward", "step"};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_step DATA_DIR [PREC [THREADS [OPT [EPOCHS [WPK]]]]]\n");
        return 2;
    }
    const int prec = argc > 2 ? atoi(argv[2]) : 0;
    const int threads = argc > 3 ? atoi(argv[3]) : 2;
    const int opt = argc > 4 ? atoi(argv[4]) : 0;
    const int epochs = argc > 5 ? atoi(argv[5]) : 3;
    const int wpk = argc > 6 ? atoi(argv[6]) : 1;
    aims_dataset *train = NULL;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_status st = load_scaled(argv[1], "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                 &train);
    if (st == AIMS_OK) {
        st = aims_model_create(AIMS_MODEL_KIND_MLP, 784, 10, &m);
    }
    if (st == AIMS_OK) {
        st = aims_model_add_dense(m, 256, AIMS_ACT_RELU);
    }
    if (st == AIMS_OK) {
        st = aims_model_set_param_i64(m, AIMS_MODEL_PRECISION, prec);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_create(m, &t);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_OPTIMIZER, opt);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, opt == 0 ? 0.1 : 0.001);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_f64(t, AIMS_TRAIN_MOMENTUM, opt == 0 ? 0.9 : 0.0);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 128);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_THREADS, threads);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, epochs + 1);
    }
    if (st == AIMS_OK) {
        const int before = aimsi_train_wpk_force(wpk);
        st = aims_trainer_begin(t, train, NULL);
        aimsi_train_wpk_force(before);
    }
    if (st != AIMS_OK) {
        fprintf(stderr, "bench_step: %s\n", t != NULL ? aims_trainer_errmsg(t) : "setup failed");
        return 1;
    }
    const size_t steps = (size_t)t->steps_per_epoch;
    double *tm = malloc(sizeof(double) * PHASES * steps * (size_t)epochs);
    if (tm == NULL) {
        return 1;
    }
    size_t cnt = 0;
    double loss_sum = 0.0;
    for (int ep = 0; ep <= epochs; ep++) { /* epoch 0: warm-up, not recorded */
        t->epoch = ep;
        aimsi_train_make_perm(t, ep);
        for (size_t pos = 0; pos < steps; pos++) {
            const size_t first = pos * t->bmax;
            const size_t n = t->n_tr - first < t->bmax ? t->n_tr - first : t->bmax;
            opt_step o = {0};
            o.lr = opt == 0 ? 0.1f : 0.001f;
            o.mom = opt == 0 ? 0.9f : 0.0f;
            o.b1 = (float)t->h.b1;
            o.b2 = (float)t->h.b2;
            o.eps = (float)t->h.eps;
            o.c1 = 0.5f;
            o.c2 = 0.5f;
            double p[PHASES + 1];
            p[0] = now_us();
            aimsi_train_gather(t, first, n);
            p[1] = now_us();
            aimsi_train_forward(t, n);
            p[2] = now_us();
            loss_sum += aimsi_train_loss_grad(t, n);
            p[3] = now_us();
            aimsi_train_backward(t, n, &o);
            p[4] = now_us();
            t->step++;
            if (ep > 0) {
                for (int k = 0; k < 4; k++) {
                    tm[k * steps * (size_t)epochs + cnt] = p[k + 1] - p[k];
                }
                tm[4 * steps * (size_t)epochs + cnt] = p[4] - p[0];
                cnt++;
            }
        }
    }
    printf("bench_step prec=%d threads=%d opt=%d wpk=%d: %zu steps, mean loss %.4f\n", prec,
           threads, opt, t->wpk[0] != NULL, cnt, loss_sum / (double)(t->n_tr * (size_t)(epochs + 1)));
    printf("%-10s %9s %9s %9s %9s\n", "phase", "min_us", "p10_us", "median_us", "mean_us");
    for (int k = 0; k < PHASES; k++) {
        double *v = tm + (size_t)k * steps * (size_t)epochs;
        double sum = 0.0;
        for (size_t i = 0; i < cnt; i++) {
            sum += v[i];
        }
        qsort(v, cnt, sizeof *v, cmp_double);
        printf("%-10s %9.1f %9.1f %9.1f %9.1f\n", g_names[k], v[0], v[cnt / 10], v[cnt / 2],
               sum / (double)cnt);
    }
    free(tm);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(train);
    return 0;
}
