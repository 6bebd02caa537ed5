/*
 * cli_plot.c -- `aims plot FILE... --out CHART.svg`: charts a person would
 * rather look at than a table, as self-contained SVG written by hand.
 *
 * Two kinds of input, told apart by their records (one JSON object a line):
 *
 *   training curves  the lines `aims train` writes on stderr when it is not a
 *                    terminal ({"epoch":3,"epochs":10,"train_loss":0.41,...}):
 *                    a line chart of train_loss by epoch, one series per file;
 *   bench results    bench/results/NAME.jsonl ({"goal":..,"contender":..,
 *                    "metric":..,"median":..,"unit":..}): horizontal bars,
 *                    one panel per metric (each with its own scale), one
 *                    colour per contender.
 *
 * Every chart has a title, axes with "nice" ticks (1/2/5 x 10^k steps), tick
 * labels, axis names and a legend. All text is XML-escaped, so a file name
 * or contender with '<' or '&' still gives a well-formed document (the test
 * parses every chart with Python's XML parser). Lines that are not JSON, or
 * JSON without the fields, are skipped; a file with no usable record at all
 * is an error (exit 1) naming it, as is mixing the two kinds (exit 2).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_json.h"
#include "cli_tools.h"

#define PLOT_MAX_SERIES 16
#define PLOT_MAX_POINTS 100000
#define PLOT_MAX_BARS 400

static const char *const k_colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                       "#9467bd", "#8c564b", "#e377c2", "#17becf"};
#define NCOLORS (sizeof k_colors / sizeof k_colors[0])

typedef struct series {
    char *label;
    double *x, *y;
    size_t n, cap;
} series;

typedef struct bar {
    char *metric, *unit, *label, *contender;
    double value;
} bar;

typedef struct plot {
    series s[PLOT_MAX_SERIES];
    size_t ns;
    bar b[PLOT_MAX_BARS];
    size_t nb;
    const char *title, *out;
} plot;

static void xml_text(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') {
                fputc(*s, f); /* XML 1.0 forbids most control characters */
            }
        }
    }
}

static char *dup_str(const char *s)
{
    const size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

/* "nice" tick step for a range, about @p want ticks. */
static double nice_step(double span, int want)
{
    if (!(span > 0)) {
        return 1;
    }
    const double raw = span / want;
    const double mag = pow(10, floor(log10(raw)));
    const double f = raw / mag;
    return mag * (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10);
}

static void fmt_num(char *buf, size_t cap, double v)
{
    if (fabs(v) < 1e-12) {
        v = 0;
    }
    snprintf(buf, cap, "%g", v);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s != NULL ? s + 1 : path;
}

static const double *num_field(const cj *o, const char *const *keys)
{
    for (; *keys != NULL; keys++) {
        const cj *v = cj_get(o, *keys);
        if (v != NULL && v->kind == CJ_NUM && isfinite(v->num)) {
            return &v->num;
        }
    }
    return NULL;
}

static const char *str_field(const cj *o, const char *key, const char *dflt)
{
    const cj *v = cj_get(o, key);
    return v != NULL && v->kind == CJ_STR ? v->str : dflt;
}

static int add_point(series *s, double x, double y)
{
    if (s->n == s->cap) {
        if (s->cap >= PLOT_MAX_POINTS) {
            return 0; /* enough points for any screen */
        }
        const size_t cap = s->cap ? s->cap * 2 : 64;
        double *nx = realloc(s->x, cap * sizeof *nx);
        if (nx == NULL) {
            return -1;
        }
        s->x = nx;
        double *ny = realloc(s->y, cap * sizeof *ny);
        if (ny == NULL) {
            return -1;
        }
        s->y = ny;
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
    return 0;
}

static int add_bar(plot *p, const cj *o, double value)
{
    if (p->nb == PLOT_MAX_BARS) {
        return 0;
    }
    bar *b = &p->b[p->nb];
    char label[256];
    const char *goal = str_field(o, "goal", "");
    const char *who = str_field(o, "contender", "?");
    snprintf(label, sizeof label, "%s%s%s", goal, goal[0] ? " " : "", who);
    b->metric = dup_str(str_field(o, "metric", "value"));
    b->unit = dup_str(str_field(o, "unit", ""));
    b->label = dup_str(label);
    b->contender = dup_str(who);
    b->value = value;
    p->nb++;
    return b->metric && b->unit && b->label && b->contender ? 0 : -1;
}

/* Read one file's records into @p p; returns 0, or 1 with a message. */
static int read_input(plot *p, const char *path)
{
    size_t len = 0;
    char *text = cli_read_file(path, &len);
    if (text == NULL) {
        fprintf(stderr, "aims plot: cannot read %s: %s\n", path, strerror(errno));
        return 1;
    }
    static const char *const k_epoch[] = {"epoch", NULL};
    static const char *const k_loss[] = {"train_loss", "loss", NULL};
    static const char *const k_value[] = {"median", "median_rps", "value", "mean", "ratio",
                                          NULL};
    series *s = p->ns < PLOT_MAX_SERIES ? &p->s[p->ns] : NULL;
    size_t used = 0;
    int rc = 0;
    for (char *line = text, *nl = NULL; line != NULL && rc == 0; line = nl) {
        nl = strchr(line, '\n');
        if (nl != NULL) {
            *nl++ = '\0';
        }
        cj *o = cj_parse(line, strlen(line), NULL, 0);
        if (o == NULL || o->kind != CJ_OBJ) {
            cj_free(o);
            continue;
        }
        const double *ep = num_field(o, k_epoch);
        const double *loss = num_field(o, k_loss);
        const double *val = num_field(o, k_value);
        if (ep != NULL && loss != NULL && s != NULL) {
            rc = add_point(s, *ep, *loss);
            used++;
        } else if (cj_get(o, "metric") != NULL && val != NULL) {
            /* a field named like the metric is its value ("ratio" records
             * also carry the raw medians they were computed from) */
            const cj *own = cj_get(o, str_field(o, "metric", ""));
            rc = add_bar(p, o, own != NULL && own->kind == CJ_NUM && isfinite(own->num)
                                   ? own->num : *val);
            used++;
        }
        cj_free(o);
    }
    free(text);
    if (rc != 0) {
        fprintf(stderr, "aims plot: out of memory\n");
        return 1;
    }
    if (used == 0) {
        fprintf(stderr, "aims plot: %s: no training records ({\"epoch\":..,\"train_loss\":..}) "
                        "nor bench records ({\"metric\":..,\"median\":..})\n", path);
        return 1;
    }
    if (s != NULL && s->n > 0) {
        s->label = dup_str(base_name(path));
        p->ns++;
    }
    return 0;
}

static void svg_open(FILE *f, int w, int h, const char *title)
{
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
               "<title>", w, h, w, h);
    xml_text(f, title);
    fprintf(f, "</title>\n<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n"
               "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" "
               "font-weight=\"bold\">", w, h, w / 2);
    xml_text(f, title);
    fputs("</text>\n", f);
}

static void legend_entry(FILE *f, int x, int y, const char *color, const char *label, int line)
{
    if (line) {
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                   "stroke-width=\"2\"/>\n", x, y - 4, x + 18, y - 4, color);
    } else {
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", x + 3,
                y - 10, color);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\">", x + 24, y);
    xml_text(f, label);
    fputs("</text>\n", f);
}

static int line_chart(const plot *p, FILE *f)
{
    const int W = 860, H = 500, L = 80, R = 220, T = 44, B = 60;
    const int pw = W - L - R, ph = H - T - B;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (size_t i = 0; i < p->ns; i++) {
        for (size_t k = 0; k < p->s[i].n; k++) {
            x0 = fmin(x0, p->s[i].x[k]);
            x1 = fmax(x1, p->s[i].x[k]);
            y0 = fmin(y0, p->s[i].y[k]);
            y1 = fmax(y1, p->s[i].y[k]);
        }
    }
    y0 = fmin(y0, 0); /* losses read best against zero */
    if (x1 <= x0) {
        x1 = x0 + 1;
    }
    if (y1 <= y0) {
        y1 = y0 + 1;
    }
    const double xs = nice_step(x1 - x0, 8), ys = nice_step(y1 - y0, 6);
    x0 = floor(x0 / xs) * xs;
    x1 = ceil(x1 / xs) * xs;
    y1 = ceil(y1 / ys) * ys;
#define PX(v) (L + (int)lround(((v) - x0) / (x1 - x0) * pw))
#define PY(v) (T + ph - (int)lround(((v) - y0) / (y1 - y0) * ph))
    svg_open(f, W, H, p->title != NULL ? p->title : "Training loss by epoch");
    char buf[64];
    for (double v = y0; v <= y1 + ys / 2; v += ys) {
        fmt_num(buf, sizeof buf, v);
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>\n"
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s</text>\n",
                L, PY(v), L + pw, PY(v), L - 6, PY(v) + 4, buf);
    }
    for (double v = x0; v <= x1 + xs / 2; v += xs) {
        fmt_num(buf, sizeof buf, v);
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                PX(v), T + ph, PX(v), T + ph + 5, PX(v), T + ph + 18, buf);
    }
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
               "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
               "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">epoch</text>\n"
               "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 %d %d)\">"
               "training loss</text>\n",
            L, T + ph, L + pw, T + ph, L, T, L, T + ph, L + pw / 2, H - 16, 20, T + ph / 2, 20,
            T + ph / 2);
    for (size_t i = 0; i < p->ns; i++) {
        const series *s = &p->s[i];
        const char *color = k_colors[i % NCOLORS];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
        for (size_t k = 0; k < s->n; k++) {
            fprintf(f, "%s%d,%d", k ? " " : "", PX(s->x[k]), PY(s->y[k]));
        }
        fputs("\"/>\n", f);
        for (size_t k = 0; k < s->n && s->n <= 200; k++) {
            fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"3\" fill=\"%s\"/>\n", PX(s->x[k]),
                    PY(s->y[k]), color);
        }
        legend_entry(f, L + pw + 16, T + 16 + 20 * (int)i, color, s->label, 1);
    }
#undef PX
#undef PY
    fputs("</svg>\n", f);
    return 0;
}

static int bar_chart(const plot *p, FILE *f)
{
    /* metrics and contenders in order of first appearance */
    const char *metrics[PLOT_MAX_BARS], *who[PLOT_MAX_BARS];
    size_t nm = 0, nw = 0;
    for (size_t i = 0; i < p->nb; i++) {
        size_t k = 0;
        while (k < nm && strcmp(metrics[k], p->b[i].metric) != 0) {
            k++;
        }
        if (k == nm) {
            metrics[nm++] = p->b[i].metric;
        }
        k = 0;
        while (k < nw && strcmp(who[k], p->b[i].contender) != 0) {
            k++;
        }
        if (k == nw) {
            who[nw++] = p->b[i].contender;
        }
    }
    const int W = 900, L = 230, R = 200, bh = 22, head = 30, foot = 50;
    const int pw = W - L - R;
    int H = 44;
    for (size_t m = 0; m < nm; m++) {
        int n = 0;
        for (size_t i = 0; i < p->nb; i++) {
            n += strcmp(p->b[i].metric, metrics[m]) == 0;
        }
        H += head + n * bh + foot;
    }
    H = H < 44 + 20 * (int)nw + 20 ? 44 + 20 * (int)nw + 20 : H;
    svg_open(f, W, H, p->title != NULL ? p->title : "Benchmark results");
    int y = 44;
    char buf[64];
    for (size_t m = 0; m < nm; m++) {
        double vmax = 0, vmin = 0;
        int n = 0;
        const char *unit = "";
        for (size_t i = 0; i < p->nb; i++) {
            if (strcmp(p->b[i].metric, metrics[m]) == 0) {
                vmax = fmax(vmax, p->b[i].value);
                vmin = fmin(vmin, p->b[i].value);
                unit = p->b[i].unit;
                n++;
            }
        }
        const double step = nice_step(vmax - vmin > 0 ? vmax - vmin : 1, 6);
        vmax = vmax > 0 ? ceil(vmax / step) * step : step;
        vmin = floor(vmin / step) * step;
        const int top = y + head, bottom = top + n * bh;
#define BX(v) (L + (int)lround(((v) - vmin) / (vmax - vmin) * pw))
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-weight=\"bold\">", L, y + 18);
        xml_text(f, metrics[m]);
        fputs("</text>\n", f);
        for (double v = vmin; v <= vmax + step / 2; v += step) {
            fmt_num(buf, sizeof buf, v);
            fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>\n"
                       "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
                       "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                    BX(v), top, BX(v), bottom, BX(v), bottom, BX(v), bottom + 5, BX(v),
                    bottom + 18, buf);
        }
        int row = 0;
        for (size_t i = 0; i < p->nb; i++) {
            const bar *b = &p->b[i];
            if (strcmp(b->metric, metrics[m]) != 0) {
                continue;
            }
            size_t c = 0;
            while (strcmp(who[c], b->contender) != 0) {
                c++;
            }
            const int by = top + row * bh + 3;
            const int x0 = BX(fmin(0, b->value)), x1 = BX(fmax(0, b->value));
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n"
                       "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">",
                    x0, by, x1 - x0 > 0 ? x1 - x0 : 1, bh - 6, k_colors[c % NCOLORS], L - 6,
                    by + bh - 10);
            xml_text(f, b->label);
            fmt_num(buf, sizeof buf, b->value);
            fprintf(f, "</text>\n<text x=\"%d\" y=\"%d\" font-size=\"10\">%s</text>\n", x1 + 4,
                    by + bh - 10, buf);
            row++;
        }
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
                   "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">",
                L, top, L, bottom, L, bottom, L + pw, bottom, L + pw / 2, bottom + 36);
        xml_text(f, metrics[m]);
        if (unit[0] != '\0') {
            fputs(" (", f);
            xml_text(f, unit);
            fputc(')', f);
        }
        fputs("</text>\n", f);
#undef BX
        y = bottom + foot;
    }
    for (size_t c = 0; c < nw; c++) {
        legend_entry(f, W - R + 20, 44 + 16 + 20 * (int)c, k_colors[c % NCOLORS], who[c], 0);
    }
    fputs("</svg>\n", f);
    return 0;
}

static int plot_usage(const char *msg)
{
    if (msg != NULL) {
        fprintf(stderr, "aims plot: %s\n", msg);
    }
    fprintf(stderr, "usage: aims plot FILE... --out CHART.svg [--title TEXT]\n"
                    "  FILE: JSON lines from 'aims train' (stderr) or bench/results/*.jsonl\n");
    return CLI_EXIT_USAGE;
}

static void plot_free(plot *p)
{
    for (size_t i = 0; i < PLOT_MAX_SERIES; i++) {
        free(p->s[i].label);
        free(p->s[i].x);
        free(p->s[i].y);
    }
    for (size_t i = 0; i < p->nb; i++) {
        free(p->b[i].metric);
        free(p->b[i].unit);
        free(p->b[i].label);
        free(p->b[i].contender);
    }
    free(p);
}

int cli_plot(int argc, char **argv)
{
    plot *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return cli_fail("plot", "out of memory");
    }
    const char *inputs[64];
    int ni = 0, rc = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        if (strcmp(argv[i], "--out") == 0 || strcmp(argv[i], "--title") == 0) {
            if (i + 1 >= argc) {
                rc = plot_usage("--out and --title need a value");
            } else if (argv[i][2] == 'o') {
                p->out = argv[++i];
            } else {
                p->title = argv[++i];
            }
        } else if (strncmp(argv[i], "--", 2) == 0) {
            fprintf(stderr, "aims plot: unknown option '%s'\n", argv[i]);
            rc = plot_usage(NULL);
        } else if (ni == 64) {
            rc = plot_usage("at most 64 input files");
        } else {
            inputs[ni++] = argv[i];
        }
    }
    if (rc == 0 && (ni == 0 || p->out == NULL)) {
        rc = plot_usage("input files and --out are required");
    }
    for (int i = 0; i < ni && rc == 0; i++) {
        rc = read_input(p, inputs[i]);
    }
    if (rc == 0 && p->ns > 0 && p->nb > 0) {
        rc = plot_usage("training curves and bench results go in separate charts");
    }
    if (rc == 0) {
        FILE *f = fopen(p->out, "w");
        if (f == NULL) {
            fprintf(stderr, "aims plot: cannot write %s: %s\n", p->out, strerror(errno));
            rc = 1;
        } else {
            rc = p->ns > 0 ? line_chart(p, f) : bar_chart(p, f);
            if (fclose(f) != 0 || rc != 0) {
                fprintf(stderr, "aims plot: cannot write %s: %s\n", p->out, strerror(errno));
                rc = 1;
            }
        }
    }
    plot_free(p);
    return rc;
}
