/*
 * bench_smax.c -- where softmax regression's time goes (P2, issue 15 item 3,
 * docs/kernels.md "Session 11: P2"): 784-10, batch 128, SGD lr 0.1 momentum
 * 0.9, 5 epochs, fit as aims_trainer_begin + steps, for the four variants of
 * train_smax.c's step -- the two-run or the one-run step, from the float
 * rows or from the u8 copy -- and the general step (the path off), alternated
 * round by round.
 *
 * usage: bench_smax DATA_DIR [ROUNDS [THREADS]]
 *
 * Per variant: the median and best fit (begin + every step; what bench_train
 * times), its process CPU time (median, least), begin alone, and the minimum and median of one step (the u8 variants make
 * their copy during the first epoch and read it from the second). On a shared machine the minimum step is what a step costs when
 * nothing else runs; medians show the load. Internal API (links the static
 * library for the force switches); a measurement tool, never in meson test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/aimsi_train.h"

#include "bench_data.h"
#include "bench_util.h"

/* Variant v < 4: bit 1 one-run, bit 0 u8; GENERAL: the path off (train_dense.c's
 * step: the own GEMM or OpenBLAS), the same fit for comparison in one process. */
enum { VARIANTS = 5, GENERAL = 4, MAX_ROUNDS = 16 };
static const char *const g_names[VARIANTS] = {"two-run float", "two-run u8", "one-run float",
                                              "one-run u8", "general step"};

/* CPU seconds of the whole process (every thread): on a machine shared with
 * other work, what a fit costs with preemption taken out (with 2 threads it
 * includes the polls at the meeting point and the pool's). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double median_of(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* One fit of variant v: seconds of begin and of the fit; step times in us. */
static int fit_once(const aims_dataset *train, int threads, int v, double *begin_s,
                    double *fit_s, double *fit_cpu, double *steps, size_t *nsteps,
                    double *acc_loss)
{
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_status st = aims_model_create(AIMS_MODEL_KIND_SOFTMAX, 784, 10, &m);
    if (st == AIMS_OK) {
        st = aims_trainer_create(m, &t);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, 0.1);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_f64(t, AIMS_TRAIN_MOMENTUM, 0.9);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, 128);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, 5);
    }
    if (st == AIMS_OK) {
        st = aims_trainer_set_param_i64(t, AIMS_TRAIN_THREADS, threads);
    }
    const int was_run = aimsi_train_smax_one_run_force((v >> 1) & 1);
    const int was_u8 = aimsi_train_smax_compact_force(v != GENERAL && (v & 1));
    const int was_on = aimsi_train_smax_force(v != GENERAL);
    const double c0 = cpu_s();
    const double t0 = now_s();
    if (st == AIMS_OK) {
        st = aims_trainer_begin(t, train, NULL);
    }
    const double t1 = now_s();
    size_t n = 0;
    int done = 0;
    while (st == AIMS_OK && !done) {
        const double a = now_s();
        st = aims_trainer_step(t, &done);
        steps[n++] = (now_s() - a) * 1e6;
    }
    const double t2 = now_s();
    *fit_cpu = cpu_s() - c0;
    /* the u8 copy is made during the first epoch and read from the second */
    if (st == AIMS_OK && v != GENERAL &&
        (!aimsi_train_smax_on(t) || aimsi_train_smax_compact_on(t) != (v & 1))) {
        fprintf(stderr, "bench_smax: variant %s does not apply\n", g_names[v]);
        st = AIMS_E_STATE;
    }
    aimsi_train_smax_one_run_force(was_run);
    aimsi_train_smax_compact_force(was_u8);
    aimsi_train_smax_force(was_on);
    if (st == AIMS_OK) {
        st = aims_trainer_get_stat(t, AIMS_TRAINER_STAT_TRAIN_LOSS, acc_loss);
    }
    if (st != AIMS_OK) {
        fprintf(stderr, "bench_smax: %s\n", t != NULL ? aims_trainer_errmsg(t) : "setup failed");
    }
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    *begin_s = t1 - t0;
    *fit_s = t2 - t0;
    *nsteps = n;
    return st == AIMS_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_smax DATA_DIR [ROUNDS [THREADS]]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    rounds = rounds < 1 ? 1 : rounds > MAX_ROUNDS ? MAX_ROUNDS : rounds;
    const int threads = argc > 3 ? atoi(argv[3]) : 2;
    aims_dataset *train = NULL;
    if (load_scaled(argv[1], "train-images-idx3-ubyte", "train-labels-idx1-ubyte", &train) !=
        AIMS_OK) {
        fprintf(stderr, "bench_smax: cannot load Fashion-MNIST under %s\n", argv[1]);
        return 1;
    }
    const size_t cap = 5 * 470 + 16;
    double *steps = malloc(sizeof(double) * cap * (size_t)rounds * VARIANTS);
    double fit[VARIANTS][MAX_ROUNDS];
    double beg[VARIANTS][MAX_ROUNDS];
    double cpu[VARIANTS][MAX_ROUNDS];
    double loss[VARIANTS];
    size_t ns[VARIANTS] = {0};
    if (steps == NULL) {
        return 1;
    }
    /* the u8 copy: both kernel sets make and read it */
    const char *isa = aimsi_train_smax_isa();
    const int u8 = isa != NULL;
    for (int r = 0; r < rounds; r++) {
        for (int v = 0; v < VARIANTS; v++) {
            if (v != GENERAL && (v & 1) && !u8) {
                continue;
            }
            size_t n = 0;
            double *s = steps + ((size_t)v * (size_t)rounds) * cap + ns[v];
            if (fit_once(train, threads, v, &beg[v][r], &fit[v][r], &cpu[v][r], s, &n,
                         &loss[v]) != 0) {
                return 1;
            }
            ns[v] += n;
        }
    }
    printf("bench_smax threads=%d rounds=%d kernels=%s (P2: 784-10, batch 128, 5 epochs)\n",
           threads, rounds, isa != NULL ? isa : "none");
    printf("%-14s %10s %10s %10s %10s %10s %10s %10s\n", "variant", "fit_med_s", "fit_min_s",
           "cpu_med_s", "cpu_min_s", "begin_ms", "step_min", "step_med");
    for (int v = 0; v < VARIANTS; v++) {
        if (v != GENERAL && (v & 1) && !u8) {
            printf("%-14s n/a (no u8 copy in the %s kernels)\n", g_names[v],
                   isa != NULL ? isa : "no");
            continue;
        }
        double *s = steps + (size_t)v * (size_t)rounds * cap;
        double fmin = fit[v][0];
        for (int r = 1; r < rounds; r++) {
            fmin = fit[v][r] < fmin ? fit[v][r] : fmin;
        }
        const double smed = median_of(s, ns[v]);
        const double cmed = median_of(cpu[v], (size_t)rounds);
        const double fmed = median_of(fit[v], (size_t)rounds);
        const double bmed = median_of(beg[v], (size_t)rounds);
        printf("%-14s %10.4f %10.4f %10.4f %10.4f %10.2f %10.1f %10.1f  loss %.6f\n", g_names[v],
               fmed, fmin, cmed, cpu[v][0], bmed * 1e3, s[0], smed, loss[v]);
    }
    free(steps);
    aims_dataset_destroy(train);
    return 0;
}
