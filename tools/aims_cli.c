/*
 * aims_cli.c -- `aims`, the shell front end of libaims (installed by meson).
 *
 *   aims inspect FILE                 what a file is: kind, sizes, sections,
 *                                     checksums, and what libaims reads in it
 *   aims train   DATA --out BUNDLE    load, standardise, train, save a bundle
 *   aims eval    BUNDLE DATA          accuracy / loss (JSON on stdout)
 *   aims predict BUNDLE DATA          one predicted class per line
 *   aims quantize BUNDLE DATA --out Q int8 copy of the bundle's model, its
 *                                     activation ranges calibrated on DATA
 *   aims call URL SERVICE METHOD      a client call from the shell (cli_call.c)
 *   aims plot FILE... --out SVG       training curves / bench charts (cli_plot.c)
 *
 * DATA is a CSV file (class label in the last column unless --label-column N),
 * an IDX image file with --labels LABELS_IDX, or a saved dataset (.aims): the
 * dense kinds the CLI trains (softmax, MLP). Options: --format
 * csv|idx|aims (default from the extension), --header 0|1|2, --skip-rows N,
 * --label-column N, --labels FILE, --max-rows N; train: --model softmax|mlp,
 * --hidden N[,N...], --epochs, --batch, --lr, --optimizer sgd|adam|adamw,
 * --seed, --no-standardize, --quiet.
 *
 * Why in C over the public API only: the CLI is what an operator has on a
 * machine with libaims installed and nothing else; it doubles as a check that
 * the installed headers and library are enough to do every task. `inspect`
 * reads the container header itself (the layout in docs/INSTALL.md / the codec
 * header is the file-format contract other languages rely on) and then asks
 * the library to load the file, which verifies the CRC-32C and every zstd
 * checksum.
 *
 * Logs: with --log-level (or AIMS_LOG_LEVEL) debug|info|warn|error the
 * library's records go through the daemon's sink (node_log.c: text on a
 * terminal, JSON lines otherwise, --log-format text|json to choose); by
 * default only the CLI's own one-line failure report is shown. Progress: while training, one line per epoch on stderr -- a bar redrawn in
 * place on a terminal, JSON lines otherwise. Exit status: 0, 1 on a failure
 * (the library's message on stderr), 2 on a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aims/aims.h>

#include "cli_tools.h"
#include "node_log.h"

#define EXIT_USAGE CLI_EXIT_USAGE

typedef struct cli {
    const char *cmd;
    const char *args[2];
    int nargs;
    const char *out, *format, *labels, *model, *hidden, *optimizer;
    int64_t header, skip_rows, label_column, max_rows, epochs, batch, seed;
    double lr;
    int standardize, quiet;
} cli;

static int usage(const char *msg)
{
    if (msg != NULL) {
        fprintf(stderr, "aims: %s\n", msg);
    }
    fprintf(stderr,
            "usage: aims inspect FILE\n"
            "       aims train DATA --out BUNDLE [--model softmax|mlp] [--hidden N[,N..]]\n"
            "                  [--epochs N] [--batch N] [--lr X] [--optimizer sgd|adam|adamw]\n"
            "                  [--seed N] [--no-standardize] [--quiet]\n"
            "       aims eval BUNDLE DATA\n"
            "       aims predict BUNDLE DATA\n"
            "       aims quantize BUNDLE CALIBRATION_DATA --out BUNDLE\n"
            "       aims call URL SERVICE METHOD [--json FILE|-] [--csv FILE --row N]\n"
            "                 [--text STRING] [--registry] [--timeout MS]\n"
            "       aims plot FILE... --out CHART.svg [--title TEXT]\n"
            "data options: [--format csv|idx|aims] [--labels IDX_LABELS] [--header 0|1|2]\n"
            "              [--skip-rows N] [--label-column N] [--max-rows N]\n"
            "       aims --help | --version\n"
            "log options (any command): [--log-format text|json|auto]\n"
            "              [--log-level debug|info|warn|error|off]\n");
    return EXIT_USAGE;
}

static int parse_args(int argc, char **argv, cli *c)
{
    memset(c, 0, sizeof *c);
    c->header = 0;
    c->label_column = -2;
    c->epochs = 10;
    c->batch = 64;
    c->seed = 1;
    c->lr = 0.01;
    c->model = "softmax";
    c->optimizer = "adam";
    c->standardize = 1;
    if (argc < 2) {
        return -1;
    }
    c->cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (c->nargs == 2) {
                return -1;
            }
            c->args[c->nargs++] = a;
            continue;
        }
        if (strcmp(a, "--no-standardize") == 0) {
            c->standardize = 0;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            c->quiet = 1;
            continue;
        }
        if (i + 1 >= argc) {
            return -1;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (strcmp(a, "--out") == 0) {
            c->out = v;
        } else if (strcmp(a, "--format") == 0) {
            c->format = v;
        } else if (strcmp(a, "--labels") == 0) {
            c->labels = v;
        } else if (strcmp(a, "--model") == 0) {
            c->model = v;
        } else if (strcmp(a, "--hidden") == 0) {
            c->hidden = v;
        } else if (strcmp(a, "--optimizer") == 0) {
            c->optimizer = v;
        } else if (strcmp(a, "--lr") == 0) {
            char *end = NULL;
            c->lr = strtod(v, &end);
            bad = end == v || *end != '\0' || !isfinite(c->lr) || c->lr <= 0;
        } else if (strcmp(a, "--header") == 0) {
            bad = cli_parse_int(v, &c->header);
        } else if (strcmp(a, "--skip-rows") == 0) {
            bad = cli_parse_int(v, &c->skip_rows);
        } else if (strcmp(a, "--label-column") == 0) {
            bad = cli_parse_int(v, &c->label_column);
        } else if (strcmp(a, "--max-rows") == 0) {
            bad = cli_parse_int(v, &c->max_rows);
        } else if (strcmp(a, "--epochs") == 0) {
            bad = cli_parse_int(v, &c->epochs);
        } else if (strcmp(a, "--batch") == 0) {
            bad = cli_parse_int(v, &c->batch);
        } else if (strcmp(a, "--seed") == 0) {
            bad = cli_parse_int(v, &c->seed);
        } else {
            fprintf(stderr, "aims: unknown option '%s'\n", a);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "aims: %s: bad value '%s'\n", a, v);
            return -1;
        }
    }
    return 0;
}

/* ---- data ------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s);
    const size_t k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int load_data(const cli *c, const char *path, aims_dataset **out)
{
    const char *fmt = c->format;
    if (fmt == NULL) {
        fmt = ends_with(path, ".aims") ? "aims" : (c->labels != NULL || strstr(path, "idx") != NULL)
                                                      ? "idx"
                                                      : "csv";
    }
    aims_loadopts *lo = NULL;
    if (aims_loadopts_create(&lo) != AIMS_OK) {
        return cli_fail("options", NULL);
    }
    aims_status rc = aims_loadopts_set_param_i64(lo, AIMS_LOAD_MAX_ROWS, c->max_rows);
    if (strcmp(fmt, "csv") == 0) {
        rc = rc != AIMS_OK ? rc : aims_loadopts_set_param_i64(lo, AIMS_LOAD_HEADER, c->header);
        rc = rc != AIMS_OK ? rc : aims_loadopts_set_param_i64(lo, AIMS_LOAD_SKIP_ROWS, c->skip_rows);
        rc = rc != AIMS_OK ? rc : aims_loadopts_set_param_i64(lo, AIMS_LOAD_LABEL_COLUMN, c->label_column);
        rc = rc != AIMS_OK ? rc : aims_dataset_load_file(AIMS_FORMAT_CSV, path, lo, out);
    } else if (strcmp(fmt, "idx") == 0) {
        rc = rc != AIMS_OK ? rc : aims_dataset_load_idx(path, c->labels, lo, out);
    } else if (strcmp(fmt, "aims") == 0) {
        rc = rc != AIMS_OK ? rc : aims_dataset_load_file(AIMS_FORMAT_AIMS, path, lo, out);
    } else {
        aims_loadopts_destroy(lo);
        return usage("--format wants csv, idx or aims");
    }
    const char *msg = aims_errmsg();
    char keep[1024];
    snprintf(keep, sizeof keep, "%s", msg);
    aims_loadopts_destroy(lo);
    return rc == AIMS_OK ? 0 : cli_fail(path, keep);
}

/* ---- train -------------------------------------------------------------------------- */

static int progress(void *user, const aims_trainer *t)
{
    const cli *c = user;
    double epoch = 0, loss = 0, sps = 0;
    aims_trainer_get_stat(t, AIMS_TRAINER_STAT_EPOCH, &epoch);
    aims_trainer_get_stat(t, AIMS_TRAINER_STAT_TRAIN_LOSS, &loss);
    aims_trainer_get_stat(t, AIMS_TRAINER_STAT_SAMPLES_PER_S, &sps);
    if (c->quiet) {
        return 0;
    }
    if (isatty(STDERR_FILENO)) {
        const int width = 30;
        const int done = (int)(width * epoch / (double)c->epochs);
        fprintf(stderr, "\r[%.*s%*s] epoch %3.0f/%" PRId64 "  loss %.4f  %.0f rows/s", done,
                "##############################", width - done, "", epoch, c->epochs, loss, sps);
        if (epoch >= (double)c->epochs) {
            fputc('\n', stderr);
        }
    } else {
        fprintf(stderr, "{\"epoch\":%.0f,\"epochs\":%" PRId64 ",\"train_loss\":%.6g,"
                        "\"rows_per_s\":%.0f}\n", epoch, c->epochs, loss, sps);
    }
    return 0;
}

static int build_model(const cli *c, size_t in, size_t k, aims_model **out)
{
    const int mlp = strcmp(c->model, "mlp") == 0;
    if (!mlp && strcmp(c->model, "softmax") != 0) {
        return usage("--model wants softmax or mlp");
    }
    if (aims_model_create(mlp ? AIMS_MODEL_KIND_MLP : AIMS_MODEL_KIND_SOFTMAX, in, k, out) != AIMS_OK) {
        return cli_fail("model", NULL);
    }
    if (mlp) {
        const char *p = c->hidden != NULL ? c->hidden : "64";
        while (*p != '\0') {
            char *end = NULL;
            const long units = strtol(p, &end, 10);
            if (end == p || units <= 0 || (*end != ',' && *end != '\0')) {
                return usage("--hidden wants widths like 64 or 128,64");
            }
            if (aims_model_add_dense(*out, (size_t)units, AIMS_ACT_RELU) != AIMS_OK) {
                return cli_fail("model", aims_model_errmsg(*out));
            }
            p = *end == ',' ? end + 1 : end;
        }
    }
    return 0;
}

static int cmd_train(const cli *c)
{
    if (c->nargs != 1 || c->out == NULL) {
        return usage("train wants DATA and --out BUNDLE");
    }
    int64_t opt = strcmp(c->optimizer, "sgd") == 0     ? 0
                  : strcmp(c->optimizer, "adam") == 0  ? 1
                  : strcmp(c->optimizer, "adamw") == 0 ? 2
                                                       : -1;
    if (opt < 0) {
        return usage("--optimizer wants sgd, adam or adamw");
    }
    aims_dataset *ds = NULL, *x = NULL;
    aims_pipeline *p = NULL;
    aims_model *m = NULL;
    aims_trainer *t = NULL;
    aims_bundle *b = NULL;
    int rc = load_data(c, c->args[0], &ds);
    if (rc == 0 && aims_dataset_labels(ds) == NULL) {
        rc = cli_fail(c->args[0], "no class labels (--label-column, or --labels for IDX)");
    }
    if (rc == 0 && aims_pipeline_create(&p) != AIMS_OK) {
        rc = cli_fail("pipeline", NULL);
    }
    if (rc == 0 && c->standardize && aims_pipeline_add(p, AIMS_STEP_KIND_STANDARDIZE, NULL) != AIMS_OK) {
        rc = cli_fail("pipeline", aims_pipeline_errmsg(p));
    }
    if (rc == 0 && aims_pipeline_fit_transform(p, ds, &x) != AIMS_OK) {
        rc = cli_fail("preprocessing", aims_pipeline_errmsg(p));
    }
    if (rc == 0) {
        rc = build_model(c, aims_dataset_cols(x), aims_dataset_num_classes(x), &m);
    }
    if (rc == 0 && aims_trainer_create(m, &t) != AIMS_OK) {
        rc = cli_fail("trainer", NULL);
    }
    if (rc == 0 && (aims_trainer_set_param_i64(t, AIMS_TRAIN_OPTIMIZER, opt) != AIMS_OK ||
                    aims_trainer_set_param_f64(t, AIMS_TRAIN_LR, c->lr) != AIMS_OK ||
                    aims_trainer_set_param_i64(t, AIMS_TRAIN_EPOCHS, c->epochs) != AIMS_OK ||
                    aims_trainer_set_param_i64(t, AIMS_TRAIN_BATCH, c->batch) != AIMS_OK ||
                    aims_trainer_set_param_i64(t, AIMS_TRAIN_SEED, c->seed) != AIMS_OK)) {
        fprintf(stderr, "aims: %s\n", aims_trainer_errmsg(t));
        rc = EXIT_USAGE;
    }
    if (rc == 0) {
        aims_trainer_set_progress_fn(t, progress, (void *)c);
        if (aims_trainer_fit(t, x, NULL) != AIMS_OK) {
            rc = cli_fail("training", aims_trainer_errmsg(t));
        }
    }
    if (rc == 0 && (aims_bundle_create(c->standardize ? p : NULL, m, &b) != AIMS_OK ||
                    aims_bundle_save(b, c->out) != AIMS_OK)) {
        rc = cli_fail(c->out, NULL);
    }
    if (rc == 0) {
        printf("{\"bundle\":\"%s\",\"rows\":%zu,\"features\":%zu,\"classes\":%zu,"
               "\"params\":%zu}\n", c->out, aims_dataset_rows(ds), aims_dataset_cols(ds),
               aims_dataset_num_classes(x), aims_model_num_params(m));
    }
    aims_bundle_destroy(b);
    aims_trainer_destroy(t);
    aims_model_destroy(m);
    aims_pipeline_destroy(p);
    aims_dataset_destroy(x);
    aims_dataset_destroy(ds);
    return rc;
}

/* ---- eval / predict ------------------------------------------------------------------ */

/* The bundle and the data, run through the bundle's pipeline. */
static int bundle_data(const cli *c, aims_bundle **b, aims_dataset **ds, aims_dataset **x)
{
    if (c->nargs != 2) {
        return usage("wants BUNDLE and DATA");
    }
    if (aims_bundle_load(c->args[0], b) != AIMS_OK) {
        return cli_fail(c->args[0], NULL);
    }
    int rc = load_data(c, c->args[1], ds);
    if (rc != 0) {
        return rc;
    }
    const aims_pipeline *p = aims_bundle_pipeline(*b);
    if (p == NULL) {
        return 0;
    }
    if (aims_pipeline_transform(p, *ds, x) != AIMS_OK) {
        return cli_fail("preprocessing", NULL);
    }
    return 0;
}

static int cmd_eval(const cli *c)
{
    aims_bundle *b = NULL;
    aims_dataset *ds = NULL, *x = NULL;
    aims_eval *ev = NULL;
    int rc = bundle_data(c, &b, &ds, &x);
    if (rc == 0 && aims_model_evaluate(aims_bundle_model(b), x != NULL ? x : ds, &ev) != AIMS_OK) {
        rc = cli_fail("evaluation", NULL);
    }
    if (rc == 0) {
        double acc = NAN, loss = NAN, rows = 0;
        aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ACCURACY, &acc);
        aims_eval_get_metric(ev, AIMS_EVAL_METRIC_LOG_LOSS, &loss);
        aims_eval_get_metric(ev, AIMS_EVAL_METRIC_ROWS, &rows);
        printf("{\"rows\":%.0f,\"accuracy\":%.6f,\"log_loss\":%.6f}\n", rows, acc, loss);
    }
    aims_eval_destroy(ev);
    aims_dataset_destroy(x);
    aims_dataset_destroy(ds);
    aims_bundle_destroy(b);
    return rc;
}

static int cmd_predict(const cli *c)
{
    aims_bundle *b = NULL;
    aims_dataset *ds = NULL, *x = NULL;
    int rc = bundle_data(c, &b, &ds, &x);
    int32_t *cls = NULL;
    const aims_dataset *in = x != NULL ? x : ds;
    const size_t rows = rc == 0 ? aims_dataset_rows(in) : 0;
    if (rc == 0) {
        cls = malloc((rows > 0 ? rows : 1) * sizeof *cls);
        if (cls == NULL) {
            rc = cli_fail("predict", "out of memory");
        }
    }
    if (rc == 0 && aims_model_predict_class(aims_bundle_model(b), aims_dataset_features(in), rows,
                                            aims_dataset_cols(in), cls, rows) != AIMS_OK) {
        rc = cli_fail("predict", NULL);
    }
    for (size_t i = 0; rc == 0 && i < rows; i++) {
        printf("%d\n", (int)cls[i]);
    }
    free(cls);
    aims_dataset_destroy(x);
    aims_dataset_destroy(ds);
    aims_bundle_destroy(b);
    return rc;
}

static int cmd_quantize(const cli *c)
{
    if (c->out == NULL) {
        return usage("quantize wants BUNDLE, CALIBRATION_DATA and --out BUNDLE");
    }
    aims_bundle *b = NULL, *qb = NULL;
    aims_dataset *ds = NULL, *x = NULL;
    aims_model *q = NULL;
    int rc = bundle_data(c, &b, &ds, &x);
    if (rc == 0 && aims_model_quantize(aims_bundle_model(b), x != NULL ? x : ds, &q) != AIMS_OK) {
        rc = cli_fail("quantize", NULL);
    }
    if (rc == 0 && (aims_bundle_create(aims_bundle_pipeline(b), q, &qb) != AIMS_OK ||
                    aims_bundle_save(qb, c->out) != AIMS_OK)) {
        rc = cli_fail(c->out, NULL);
    }
    if (rc == 0) {
        printf("{\"bundle\":\"%s\",\"quantized\":true,\"params\":%zu}\n", c->out,
               aims_model_num_params(q));
    }
    aims_bundle_destroy(qb);
    aims_model_destroy(q);
    aims_dataset_destroy(x);
    aims_dataset_destroy(ds);
    aims_bundle_destroy(b);
    return rc;
}

/* ---- inspect ---------------------------------------------------------------------- */

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static int cmd_inspect(const cli *c)
{
    if (c->nargs != 1) {
        return usage("inspect wants one FILE");
    }
    const char *path = c->args[0];
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return cli_fail(path, strerror(errno));
    }
    unsigned char h[24];
    const size_t got = fread(h, 1, sizeof h, f);
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    if (got < sizeof h || memcmp(h, "AIMSCTR", 8) != 0) {
        fclose(f);
        if (got >= 4 && (le32(h) == 0x03080000u || le32(h) == 0x01080000u)) {
            printf("{\"file\":\"%s\",\"bytes\":%ld,\"kind\":\"idx\"}\n", path, size);
            return 0;
        }
        return cli_fail(path, "not a libaims file (no AIMSCTR magic) and not an IDX file");
    }
    static const char *const kinds[] = {"?", "dataset", "pipeline", "model", "bundle",
                                        "checkpoint"};
    const uint32_t kind = le32(h + 12);
    const uint32_t n = le32(h + 16);
    printf("{\"file\":\"%s\",\"bytes\":%ld,\"format\":\"%u.%u\",\"kind\":\"%s\",\"crc32c\":"
           "\"%08x\",\"sections\":[", path, size, (unsigned)(h[8] | h[9] << 8),
           (unsigned)(h[10] | h[11] << 8), kind < 6 ? kinds[kind] : "unknown", le32(h + 20));
    for (uint32_t i = 0; i < n && i < 1024; i++) {
        unsigned char e[32];
        fseek(f, 24 + 32L * (long)i, SEEK_SET);
        if (fread(e, 1, sizeof e, f) != sizeof e) {
            break;
        }
        const uint32_t tag = le32(e);
        printf("%s{\"tag\":\"%c%c%c%c\",\"zstd\":%s,\"stored\":%" PRIu64 ",\"raw\":%" PRIu64 "}",
               i > 0 ? "," : "", (int)(tag & 0x7f) >= 32 ? (int)(tag & 0x7f) : '?',
               (int)(tag >> 8 & 0x7f) >= 32 ? (int)(tag >> 8 & 0x7f) : '?',
               (int)(tag >> 16 & 0x7f) >= 32 ? (int)(tag >> 16 & 0x7f) : '?',
               (int)(tag >> 24 & 0x7f) >= 32 ? (int)(tag >> 24 & 0x7f) : '?',
               (le32(e + 4) & 1u) ? "true" : "false", le64(e + 16), le64(e + 24));
    }
    fclose(f);
    printf("]");
    /* Loading verifies the CRC and every zstd checksum; then describe the object. */
    aims_status st = AIMS_E_UNSUPPORTED;
    if (kind == 1) {
        aims_dataset *ds = NULL;
        st = aims_dataset_load_file(AIMS_FORMAT_AIMS, path, NULL, &ds);
        if (st == AIMS_OK) {
            printf(",\"rows\":%zu,\"cols\":%zu,\"classes\":%zu", aims_dataset_rows(ds),
                   aims_dataset_cols(ds), aims_dataset_num_classes(ds));
        }
        aims_dataset_destroy(ds);
    } else if (kind == 2) {
        aims_pipeline *p = NULL;
        st = aims_pipeline_load(path, &p);
        if (st == AIMS_OK) {
            printf(",\"steps\":%zu", aims_pipeline_num_steps(p));
        }
        aims_pipeline_destroy(p);
    } else if (kind == 3 || kind == 4) {
        aims_model *m = NULL;
        aims_bundle *b = NULL;
        st = kind == 3 ? aims_model_load(path, &m) : aims_bundle_load(path, &b);
        const aims_model *mm = kind == 3 ? m : (st == AIMS_OK ? aims_bundle_model(b) : NULL);
        if (st == AIMS_OK) {
            printf(",\"model_kind\":%d,\"inputs\":%zu,\"outputs\":%zu,\"params\":%zu,"
                   "\"quantized\":%s", (int)aims_model_kind_of(mm), aims_model_input_dim(mm),
                   aims_model_output_dim(mm), aims_model_num_params(mm),
                   aims_model_is_quantized(mm) ? "true" : "false");
            if (b != NULL) {
                const char *lv = aims_bundle_meta(b, "library_version");
                printf(",\"pipeline\":%s,\"library_version\":\"%s\"",
                       aims_bundle_pipeline(b) != NULL ? "true" : "false", lv ? lv : "");
            }
        }
        aims_model_destroy(m);
        aims_bundle_destroy(b);
    }
    const int ok = st == AIMS_OK;
    printf(",\"checksums\":\"%s\"}\n", ok ? "ok" : (st == AIMS_E_UNSUPPORTED ? "unchecked" : "bad"));
    if (!ok && st != AIMS_E_UNSUPPORTED) {
        return cli_fail(path, NULL);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(NULL);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("aims %s (libaims %s)\n", AIMS_VERSION_STRING, aims_version_string());
        return 0;
    }
    const char *lvl = getenv("AIMS_LOG_LEVEL");
    if (lvl == NULL || nlog_set_level(lvl) != 0) {
        nlog_set_level("off"); /* the CLI reports its failure itself, with the cause */
    }
    /* --log-format / --log-level anywhere on the line, taken out before the
     * subcommand parses its own flags */
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        const int is_fmt = strcmp(argv[i], "--log-format") == 0;
        if (is_fmt || strcmp(argv[i], "--log-level") == 0) {
            if (i + 1 >= argc ||
                (is_fmt ? nlog_set_format(argv[i + 1]) : nlog_set_level(argv[i + 1])) != 0) {
                fprintf(stderr, "aims: %s: expected %s\n", argv[i],
                        is_fmt ? "text|json|auto" : "debug|info|warn|error|off");
                return usage(NULL);
            }
            i++;
            continue;
        }
        argv[kept++] = argv[i];
    }
    argc = kept;
    nlog_install("aims");
    if (argc >= 2 && strcmp(argv[1], "call") == 0) {
        return cli_call(argc - 2, argv + 2);
    }
    if (argc >= 2 && strcmp(argv[1], "plot") == 0) {
        return cli_plot(argc - 2, argv + 2);
    }
    cli c;
    if (parse_args(argc, argv, &c) != 0) {
        return usage(NULL);
    }
    if (strcmp(c.cmd, "inspect") == 0) {
        return cmd_inspect(&c);
    }
    if (strcmp(c.cmd, "train") == 0) {
        return cmd_train(&c);
    }
    if (strcmp(c.cmd, "eval") == 0) {
        return cmd_eval(&c);
    }
    if (strcmp(c.cmd, "predict") == 0) {
        return cmd_predict(&c);
    }
    if (strcmp(c.cmd, "quantize") == 0) {
        return cmd_quantize(&c);
    }
    fprintf(stderr, "aims: unknown command '%s'\n", c.cmd);
    return usage(NULL);
}
