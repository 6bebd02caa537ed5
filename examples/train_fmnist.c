/*
 * train_fmnist.c -- the smallest complete train -> bundle -> serve program.
 *
 *   train_fmnist DATA_DIR [EPOCHS]
 *
 * Loads Fashion-MNIST, scales pixels, trains a 784-256-10 MLP, saves pipeline +
 * model as one bundle, reloads it and classifies the first test image from its
 * raw pixels. Error handling is one macro: every libaims call returns a status,
 * and aims_errmsg() says what went wrong (file, byte, parameter).
 *
 * Exit codes: 0 ok, 1 failure, 2 usage, 77 Fashion-MNIST not found in DATA_DIR.
 */
#include <stdio.h>
#include <stdlib.h>

#include <aims/aims.h>

#define TRY(call)                                                                    \
    do {                                                                             \
        if ((call) != AIMS_OK) {                                                     \
            fprintf(stderr, "%s: %s\n", #call, aims_errmsg());                      \
            return 1;                                                                \
        }                                                                            \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: train_fmnist DATA_DIR [EPOCHS]\n");
        return 2;
    }
    char img[1024], lab[1024], timg[1024], tlab[1024];
    snprintf(img, sizeof img, "%s/fashion-mnist/train-images-idx3-ubyte", argv[1]);
    snprintf(lab, sizeof lab, "%s/fashion-mnist/train-labels-idx1-ubyte", argv[1]);
    snprintf(timg, sizeof timg, "%s/fashion-mnist/t10k-images-idx3-ubyte", argv[1]);
    snprintf(tlab, sizeof tlab, "%s/fashion-mnist/t10k-labels-idx1-ubyte", argv[1]);
    const int epochs = argc > 2 ? atoi(argv[2]) : 5;

    aims_dataset *train, *test, *train_x, *test_x;
    aims_pipeline *p;
    aims_model *m;
    aims_trainer *t;
    aims_eval *ev;
    aims_bundle *b, *served;
    double acc;
    float scores[10];

    /* No data yet is not a failure: exit 77, which `meson test` counts as skipped. */
    const aims_status st = aims_dataset_load_idx(img, lab, NULL, &train);
    if (st == AIMS_E_NOTFOUND) {
        fprintf(stderr, "train_fmnist: %s; run `make demo` to fetch Fashion-MNIST\n",
                aims_errmsg());
        return 77;
    }
    TRY(st);
    TRY(aims_dataset_load_idx(timg, tlab, NULL, &test));
    TRY(aims_pipeline_create(&p));
    TRY(aims_pipeline_add(p, AIMS_STEP_KIND_SCALE, NULL)); /* x / 255 */
    TRY(aims_pipeline_fit_transform(p, train, &train_x));
    TRY(aims_pipeline_transform(p, test, &test_x));

    TRY(aims_model_create(AIMS_MODEL_KIND_MLP, 784, 10, &m));
    TRY(aims_model_add_dense(m, 256, AIMS_ACT_RELU));
    TRY(aims_trainer_create(m, &t));
    TRY(aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, epochs)); /* SGD 0.1, momentum 0.9 */
    TRY(aims_trainer_fit(t, train_x, NULL));
    TRY(aims_model_evaluate(m, test_x, &ev));
    TRY(aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, &acc));
    printf("test accuracy after %d epochs: %.4f\n", epochs, acc);

    TRY(aims_bundle_create(p, m, &b));
    TRY(aims_bundle_set_meta(b, "name", "fmnist-mlp"));
    TRY(aims_bundle_save(b, "fmnist-mlp.aimsb"));
    TRY(aims_bundle_load("fmnist-mlp.aimsb", &served));
    TRY(aims_bundle_predict_rows(served, AIMS_OUT_PROBA, aims_dataset_features(test), 1, 784,
                                 scores, 10));
    int best = 0;
    for (int k = 1; k < 10; k++) {
        best = scores[k] > scores[best] ? k : best;
    }
    printf("first test image: class %d (p = %.3f), label %d\n", best, scores[best],
           aims_dataset_labels(test)[0]);

    aims_bundle_destroy(served);
    aims_bundle_destroy(b);
    aims_eval_destroy(ev);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_dataset_destroy(test_x);
    aims_dataset_destroy(train_x);
    aims_pipeline_destroy(p);
    aims_dataset_destroy(test);
    aims_dataset_destroy(train);
    remove("fmnist-mlp.aimsb");
    return acc > 0.75 ? 0 : 1;
}
