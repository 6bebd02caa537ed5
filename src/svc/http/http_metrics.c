/*
 * http_metrics.c -- GET /metrics (Prometheus text format 0.0.4) and GET /
 * (the status page) of the HTTP front door.
 *
 * Metrics come from three places: each service's own statistics
 * (aims_service_get_stat: the counters service.c keeps lock-free), the node's
 * aims_metrics registry (its latency histograms, exposed as it renders them),
 * and the process (/proc/self/statm, getrusage). Names follow the Prometheus
 * conventions (base units, _total counters, _seconds histograms); the list
 * with meanings is in docs/HTTP.md. The node registry's nanosecond counter
 * (aims_svc_busy_ns_total) is left out of the scrape in favour of
 * aims_model_compute_seconds_total.
 *
 * The status page is one self-contained HTML document (inline CSS and SVG,
 * no scripts needed; a <meta refresh> keeps it current): per service its
 * state, queue, in-flight, p50/p99 and an SVG bar chart of its latency
 * histogram, plus the seed's metrics as this node can measure them.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "aimsi_http.h"

#define MAX_VIEWS 64

static double stat_of(aims_service *s, aims_service_stat what)
{
    double v = 0;
    (void)aims_service_get_stat(s, what, &v);
    return v;
}

static void labels(aimsi_hbuf *b, const aimsi_svc_view *v, const char *node)
{
    aimsi_hbuf_printf(b, "{model=\"%s\",version=\"%s\",node=\"%s\"}", v->model, v->version,
                      node);
}

typedef struct metric_def {
    const char *name, *type, *help;
    int stat;     /* aims_service_stat, or a negative code below */
    double scale;
} metric_def;

enum { M_SUCCESS = -1, M_RUNNING = -2 };

static const metric_def k_defs[] = {
    {"aims_model_request_success_total", "counter", "Requests a model answered successfully.",
     M_SUCCESS, 1},
    {"aims_model_request_failure_total", "counter", "Requests a model's handler failed.",
     AIMS_SERVICE_STAT_ERRORS, 1},
    {"aims_model_rejected_total", "counter",
     "Requests refused before running (queue full or deadline passed).", AIMS_SERVICE_STAT_REJECTED, 1},
    {"aims_model_inference_rows_total", "counter", "Rows (inferences) run in batches.",
     AIMS_SERVICE_STAT_BATCH_ROWS, 1},
    {"aims_model_batch_executions_total", "counter", "Batched model executions.",
     AIMS_SERVICE_STAT_BATCHES, 1},
    {"aims_model_compute_seconds_total", "counter", "Time handlers spent running.",
     AIMS_SERVICE_STAT_BUSY_NS, 1e-9},
    {"aims_model_queue_depth", "gauge", "Requests waiting in the model's queue.",
     AIMS_SERVICE_STAT_QUEUED, 1},
    {"aims_model_inflight", "gauge", "Requests running now.", AIMS_SERVICE_STAT_INFLIGHT, 1},
    {"aims_model_latency_p50_seconds", "gauge", "Median latency (queue + run), recent.",
     AIMS_SERVICE_STAT_P50_NS, 1e-9},
    {"aims_model_latency_p99_seconds", "gauge", "99th percentile latency (queue + run), recent.",
     AIMS_SERVICE_STAT_P99_NS, 1e-9},
    {"aims_model_running", "gauge", "1 while the service is started and not draining.",
     M_RUNNING, 1},
};

static void process_metrics(aimsi_hbuf *b)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) {
            rss = 0;
        }
        fclose(f);
    }
    struct rusage ru;
    memset(&ru, 0, sizeof(ru));
    (void)getrusage(RUSAGE_SELF, &ru);
    const double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
                       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    aimsi_hbuf_printf(b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                         "# TYPE process_resident_memory_bytes gauge\n"
                         "process_resident_memory_bytes %.0f\n",
                      (double)rss * (double)sysconf(_SC_PAGESIZE));
    aimsi_hbuf_printf(b, "# HELP process_cpu_seconds_total Total user and system CPU time "
                         "spent in seconds.\n# TYPE process_cpu_seconds_total counter\n"
                         "process_cpu_seconds_total %.6f\n", cpu);
}

/* Help text for the node registry's families (its exposition has # TYPE only). */
static const char *registry_help(const char *name, size_t len)
{
    static const struct {
        const char *name, *help;
    } k[] = {
        {"aims_svc_requests_total", "Requests a service accepted (any protocol)."},
        {"aims_svc_errors_total", "Requests whose handler failed."},
        {"aims_svc_rejected_total", "Requests refused (queue full, deadline, draining)."},
        {"aims_svc_latency_seconds", "Service latency, queue + run, in seconds."},
        {"aims_svc_queue_depth", "Requests waiting in the service queue."},
        {"aims_svc_batches_total", "Batched executions of an infer service."},
        {"aims_svc_batch_rows_total", "Rows run in those batches."},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (strlen(k[i].name) == len && memcmp(k[i].name, name, len) == 0) {
            return k[i].help;
        }
    }
    return "libaims node metric.";
}

/* The node registry's exposition minus the families replaced above, with a
 * # HELP line added before each # TYPE that has none. */
static void node_registry(aimsi_hbuf *b, aims_node *n)
{
    char *text = NULL;
    size_t len = 0;
    if (aims_metrics_prometheus(aims_node_metrics(n), &text, &len) != AIMS_OK || text == NULL) {
        return;
    }
    const char *p = text;
    const char *end = text + len;
    int had_help = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl != NULL ? nl + 1 : end;
        const size_t l = (size_t)(e - p);
        if (memmem(p, l, "aims_svc_busy_ns_total", 22) != NULL) {
            p = e;
            continue;
        }
        if (l > 7 && memcmp(p, "# TYPE ", 7) == 0 && !had_help) {
            const char *nm = p + 7;
            const char *sp = memchr(nm, ' ', (size_t)(e - nm));
            const size_t nl2 = sp != NULL ? (size_t)(sp - nm) : 0;
            aimsi_hbuf_printf(b, "# HELP %.*s %s\n", (int)nl2, nm, registry_help(nm, nl2));
        }
        had_help = l > 7 && memcmp(p, "# HELP ", 7) == 0;
        aimsi_hbuf_add(b, p, l);
        p = e;
    }
    if (len > 0 && text[len - 1] != '\n') {
        aimsi_hbuf_str(b, "\n");
    }
    aims_free(text);
}

void aimsi_http_metrics(aimsi_hbuf *b, aims_node *n, const aimsi_http_counters *c)
{
    aimsi_svc_view views[MAX_VIEWS];
    size_t cnt = aimsi_node_view(n, views, MAX_VIEWS);
    cnt = cnt < MAX_VIEWS ? cnt : MAX_VIEWS;
    const char *node = aimsi_node_name(n);
    for (size_t k = 0; k < sizeof k_defs / sizeof k_defs[0]; k++) {
        const metric_def *m = &k_defs[k];
        aimsi_hbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name, m->type);
        for (size_t i = 0; i < cnt; i++) {
            double v = 0;
            if (m->stat == M_SUCCESS) {
                v = stat_of(views[i].svc, AIMS_SERVICE_STAT_REQUESTS) -
                    stat_of(views[i].svc, AIMS_SERVICE_STAT_ERRORS);
                v = v < 0 ? 0 : v;
            } else if (m->stat == M_RUNNING) {
                v = views[i].running;
            } else {
                v = stat_of(views[i].svc, (aims_service_stat)m->stat) * m->scale;
            }
            aimsi_hbuf_str(b, m->name);
            labels(b, &views[i], node);
            aimsi_hbuf_printf(b, " %.9g\n", v);
        }
    }
    aimsi_hbuf_printf(b, "# HELP aims_node_ready 1 when every service is started and "
                         "registered.\n# TYPE aims_node_ready gauge\naims_node_ready{node=\"%s\"} "
                         "%d\n", node, aimsi_node_ready(n, NULL, 0));
    aimsi_hbuf_str(b, "# HELP aims_http_responses_total HTTP responses by status class.\n"
                      "# TYPE aims_http_responses_total counter\n");
    static const char *const cls[] = {"1xx", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 1; i < 6; i++) {
        aimsi_hbuf_printf(b, "aims_http_responses_total{code=\"%s\"} %llu\n", cls[i],
                          (unsigned long long)atomic_load(&c->by_class[i]));
    }
    aimsi_hbuf_printf(b, "# HELP aims_http_infer_total HTTP infer requests by outcome.\n"
                         "# TYPE aims_http_infer_total counter\n"
                         "aims_http_infer_total{outcome=\"success\"} %llu\n"
                         "aims_http_infer_total{outcome=\"failure\"} %llu\n",
                      (unsigned long long)atomic_load(&c->infer_ok),
                      (unsigned long long)atomic_load(&c->infer_fail));
    aimsi_hbuf_printf(b, "# HELP aims_http_open_connections Open HTTP connections.\n"
                         "# TYPE aims_http_open_connections gauge\n"
                         "aims_http_open_connections %lld\n",
                      (long long)atomic_load(&c->open_conns));
    process_metrics(b);
    node_registry(b, n);
}

/* ---- status page ------------------------------------------------------------- */

static void svg_bars(aimsi_hbuf *b, aims_node *n, const aimsi_svc_view *v)
{
    /* quantiles of the node's latency histogram as bars (p10..p99; ns) */
    static const double qs[] = {0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99};
    double val[7];
    double top = 0;
    char lab[256];
    snprintf(lab, sizeof(lab), "service=\"%s\",node=\"%s\"", v->name, aimsi_node_name(n));
    for (int i = 0; i < 7; i++) {
        val[i] = 0;
        (void)aims_metrics_quantile(aims_node_metrics(n), "aims_svc_latency_seconds", lab, qs[i],
                                    &val[i]);
        top = val[i] > top ? val[i] : top;
    }
    aimsi_hbuf_str(b, "<svg class=\"hist\" width=\"280\" height=\"90\" "
                      "xmlns=\"http://www.w3.org/2000/svg\" role=\"img\">"
                      "<title>latency quantiles</title>");
    for (int i = 0; i < 7; i++) {
        const double hgt = top > 0 ? 60.0 * val[i] / top : 0;
        aimsi_hbuf_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"30\" height=\"%.1f\" "
                             "fill=\"#4a7\"/><text x=\"%d\" y=\"86\" font-size=\"9\">p%g</text>",
                          8 + i * 38, 70.0 - hgt, hgt, 10 + i * 38, qs[i] * 100);
    }
    aimsi_hbuf_printf(b, "<text x=\"4\" y=\"9\" font-size=\"9\">max %.3g ms</text></svg>",
                      top * 1e-6);
}

void aimsi_http_status_page(aimsi_hbuf *b, aims_node *n)
{
    aimsi_svc_view views[MAX_VIEWS];
    size_t cnt = aimsi_node_view(n, views, MAX_VIEWS);
    cnt = cnt < MAX_VIEWS ? cnt : MAX_VIEWS;
    char why[256];
    const int ready = aimsi_node_ready(n, why, sizeof(why));
    aimsi_hbuf_str(b, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                      "<meta http-equiv=\"refresh\" content=\"5\"><title>libaims node ");
    aimsi_hbuf_html(b, aimsi_node_name(n));
    aimsi_hbuf_str(b, "</title><style>body{font:14px sans-serif;margin:2em}"
                      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
                      ".ok{color:#080}.bad{color:#b00}</style></head><body><h1>node ");
    aimsi_hbuf_html(b, aimsi_node_name(n));
    aimsi_hbuf_printf(b, "</h1><p id=\"ready\" class=\"%s\">%s", ready ? "ok" : "bad",
                      ready ? "ready" : "not ready: ");
    if (!ready) {
        aimsi_hbuf_html(b, why);
    }
    aimsi_hbuf_str(b, "</p><table id=\"services\"><tr><th>service</th><th>kind</th>"
                      "<th>state</th><th>requests</th><th>errors</th><th>rejected</th>"
                      "<th>queue</th><th>in flight</th><th>avg batch</th><th>p50 ms</th>"
                      "<th>p99 ms</th><th>latency</th></tr>");
    for (size_t i = 0; i < cnt; i++) {
        const aimsi_svc_view *v = &views[i];
        aims_service *s = v->svc;
        const double batches = stat_of(s, AIMS_SERVICE_STAT_BATCHES);
        aimsi_hbuf_str(b, "<tr class=\"service\"><td>");
        aimsi_hbuf_html(b, v->name);
        aimsi_hbuf_printf(b, "</td><td>%s</td><td class=\"%s\">%s</td><td>%.0f</td><td>%.0f</td>"
                             "<td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.1f</td><td>%.3f</td>"
                             "<td>%.3f</td><td>",
                          v->kind, v->running ? "ok" : "bad",
                          v->draining ? "draining" : v->running ? (v->registered ? "running"
                                                                                  : "unregistered")
                                                                 : "stopped",
                          stat_of(s, AIMS_SERVICE_STAT_REQUESTS), stat_of(s, AIMS_SERVICE_STAT_ERRORS),
                          stat_of(s, AIMS_SERVICE_STAT_REJECTED), stat_of(s, AIMS_SERVICE_STAT_QUEUED),
                          stat_of(s, AIMS_SERVICE_STAT_INFLIGHT),
                          batches > 0 ? stat_of(s, AIMS_SERVICE_STAT_BATCH_ROWS) / batches : 0.0,
                          stat_of(s, AIMS_SERVICE_STAT_P50_NS) * 1e-6, stat_of(s, AIMS_SERVICE_STAT_P99_NS) * 1e-6);
        svg_bars(b, n, v);
        aimsi_hbuf_str(b, "</td></tr>");
    }
    aimsi_hbuf_str(b, "</table><h2>seed metrics</h2><table id=\"seed\">"
                      "<tr><th>model</th><th>instances here</th><th>load balance degree "
                      "(avg / max busy time)</th></tr>");
    for (size_t i = 0; i < cnt; i++) {
        int first = 1;
        for (size_t j = 0; j < i; j++) {
            first = first && strcmp(views[j].model, views[i].model) != 0;
        }
        if (!first) {
            continue;
        }
        double sum = 0, max = 0;
        size_t k = 0;
        for (size_t j = i; j < cnt; j++) {
            if (strcmp(views[j].model, views[i].model) == 0) {
                const double busy = stat_of(views[j].svc, AIMS_SERVICE_STAT_BUSY_NS);
                sum += busy;
                max = busy > max ? busy : max;
                k++;
            }
        }
        aimsi_hbuf_str(b, "<tr class=\"seed\"><td>");
        aimsi_hbuf_html(b, views[i].model);
        aimsi_hbuf_printf(b, "</td><td>%zu</td><td>%.3f</td></tr>", k,
                          max > 0 ? sum / (double)k / max : 1.0);
    }
    aimsi_hbuf_str(b, "</table><table id=\"seed-help\">"
                      "<tr><th>load balance degree</th><td>average / maximum utilisation over a "
                      "service's instances: measured by clients (aims_client_balance_degree) "
                      "or from rate(aims_model_compute_seconds_total)</td></tr>"
                      "<tr><th>parallelism</th><td>throughput of N instances / of one: "
                      "sum(rate(aims_model_request_success_total)) across nodes</td></tr>"
                      "<tr><th>autonomy degree</th><td>independent deployments / all: each "
                      "version here is its own service (model@version)</td></tr></table>");
    aimsi_hbuf_str(b, "<p><a href=\"/metrics\">/metrics</a> &middot; "
                      "<a href=\"/v2/health/ready\">/v2/health/ready</a></p></body></html>\n");
}
