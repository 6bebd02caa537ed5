/*
 * test_metrics.c -- white-box tests of src/orch/metrics.c: bucket layout,
 * quantile accuracy on known distributions, Prometheus text format, name and
 * label validation, concurrent updates (TSan) and allocation failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "orch/aimsi_orch.h"
#include "testalloc.h"

static aims_metrics *mk(void)
{
    aims_metrics *mx = NULL;
    assert_int_equal(aims_metrics_create(&mx), AIMS_OK);
    return mx;
}

/* ---- buckets --------------------------------------------------------------- */

static void test_metrics_hist_buckets_cover_and_bound_error(void **state)
{
    (void)state;
    size_t prev = 0;
    uint64_t v = 0;
    while (v < 200000000000ull) {
        const size_t i = aimsi_hist_index(v);
        assert_true(i < AIMSI_HIST_BUCKETS);
        assert_true(i >= prev); /* monotone */
        prev = i;
        uint64_t lo, hi;
        aimsi_hist_bounds(i, &lo, &hi);
        if (i < AIMSI_HIST_BUCKETS - 1) {
            assert_true(lo <= v && v < hi);
            assert_true((hi - lo) * 32 <= (lo > 32 ? lo : 32));
        }
        v = v < 100 ? v + 1 : v + v / 97 + 1;
    }
    /* Consecutive buckets tile the line. */
    for (size_t i = 0; i + 1 < AIMSI_HIST_BUCKETS; i++) {
        uint64_t lo, hi, lo2, hi2;
        aimsi_hist_bounds(i, &lo, &hi);
        aimsi_hist_bounds(i + 1, &lo2, &hi2);
        assert_int_equal(hi, lo2);
        assert_int_equal(aimsi_hist_index(lo), i);
        assert_int_equal(aimsi_hist_index(hi - 1), i);
    }
    /* 100 s is inside the range, not clamped. */
    assert_true(aimsi_hist_index(100000000000ull) < AIMSI_HIST_BUCKETS - 1);
}

/* ---- basic API --------------------------------------------------------------- */

static void test_metrics_rejects_bad_args(void **state)
{
    (void)state;
    aims_metrics *mx = mk();
    double q = 0;
    assert_int_equal(aims_metrics_create(NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_metrics_count(NULL, "a", NULL, 1), AIMS_E_MISUSE);
    assert_int_equal(aims_metrics_count(mx, NULL, NULL, 1), AIMS_E_MISUSE);
    assert_int_equal(aims_metrics_count(mx, "", NULL, 1), AIMS_E_INVAL);
    assert_int_equal(aims_metrics_count(mx, "9abc", NULL, 1), AIMS_E_INVAL);
    assert_int_equal(aims_metrics_count(mx, "a-b", NULL, 1), AIMS_E_INVAL);
    char long_name[140];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(aims_metrics_count(mx, long_name, NULL, 1), AIMS_E_INVAL);
    long_name[128] = '\0';
    assert_int_equal(aims_metrics_count(mx, long_name, NULL, 1), AIMS_OK);
    const char *bad_labels[] = {"a", "a=", "a=b", "a=\"b", "=\"b\"", "a=\"b\",", "a=\"b\"x",
                                "a=\"\\q\"", "a=\"x\ny\"", "a b=\"c\"", "1a=\"b\""};
    for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++) {
        assert_int_equal(aims_metrics_count(mx, "c", bad_labels[i], 1), AIMS_E_INVAL);
    }
    assert_int_equal(aims_metrics_count(mx, "c", "a=\"b\\\"q\\\\\\n\",z_1=\"\"", 1), AIMS_OK);
    assert_int_equal(aims_metrics_observe(mx, "h", "le=\"1\"", 1), AIMS_E_INVAL);
    assert_int_equal(aims_metrics_count(mx, "h2", "le=\"1\"", 1), AIMS_OK);
    /* One kind per name, whatever the labels. */
    assert_int_equal(aims_metrics_set_gauge(mx, "c", NULL, 1.0), AIMS_E_INVAL);
    assert_int_equal(aims_metrics_observe(mx, "c", "x=\"y\"", 1), AIMS_E_INVAL);
    /* Quantile errors */
    assert_int_equal(aims_metrics_quantile(mx, "nope", NULL, 0.5, &q), AIMS_E_NOTFOUND);
    assert_int_equal(aims_metrics_quantile(mx, "c", NULL, 0.5, &q), AIMS_E_NOTFOUND);
    assert_int_equal(aims_metrics_observe(mx, "h", NULL, 5), AIMS_OK);
    assert_int_equal(aims_metrics_quantile(mx, "h", NULL, 1.5, &q), AIMS_E_INVAL);
    assert_int_equal(aims_metrics_quantile(mx, "h", NULL, NAN, &q), AIMS_E_INVAL);
    assert_int_equal(aims_metrics_quantile(mx, "h", NULL, 0.5, NULL), AIMS_E_MISUSE);
    assert_int_equal(aims_metrics_quantile(mx, "h", "a=\"b\"", 0.5, &q), AIMS_E_NOTFOUND);
    assert_int_equal(aims_metrics_prometheus(mx, NULL, NULL), AIMS_E_MISUSE);
    aims_metrics_destroy(mx);
    aims_metrics_destroy(NULL);
}

static void test_metrics_counters_gauges_quantile_edges(void **state)
{
    (void)state;
    aims_metrics *mx = mk();
    assert_int_equal(aims_metrics_count(mx, "req_total", "svc=\"a\"", 3), AIMS_OK);
    assert_int_equal(aims_metrics_count(mx, "req_total", "svc=\"a\"", 4), AIMS_OK);
    assert_int_equal(aims_metrics_count(mx, "req_total", "svc=\"b\"", 1), AIMS_OK);
    assert_int_equal(aims_metrics_set_gauge(mx, "inflight", NULL, 2.5), AIMS_OK);
    assert_int_equal(aims_metrics_set_gauge(mx, "inflight", NULL, -1.25), AIMS_OK);
    char *txt = NULL;
    size_t len = 0;
    assert_int_equal(aims_metrics_prometheus(mx, &txt, &len), AIMS_OK);
    assert_int_equal(strlen(txt), len);
    assert_non_null(strstr(txt, "# TYPE req_total counter\n"));
    assert_non_null(strstr(txt, "req_total{svc=\"a\"} 7\n"));
    assert_non_null(strstr(txt, "req_total{svc=\"b\"} 1\n"));
    assert_non_null(strstr(txt, "# TYPE inflight gauge\ninflight -1.25\n"));
    aims_free(txt);
    /* One value: every quantile lies in its bucket. */
    for (int k = 0; k < 10; k++) {
        assert_int_equal(aims_metrics_observe(mx, "lat", NULL, 1000000), AIMS_OK);
    }
    double q0 = 0, q1 = 0, qm = 0;
    assert_int_equal(aims_metrics_quantile(mx, "lat", NULL, 0.0, &q0), AIMS_OK);
    assert_int_equal(aims_metrics_quantile(mx, "lat", NULL, 0.5, &qm), AIMS_OK);
    assert_int_equal(aims_metrics_quantile(mx, "lat", NULL, 1.0, &q1), AIMS_OK);
    assert_true(q0 <= qm && qm <= q1);
    assert_true(fabs(qm - 1e6) / 1e6 < 0.03);
    assert_true(fabs(q1 - 1e6) / 1e6 < 0.035);
    aims_metrics_destroy(mx);
}

/* ---- quantile accuracy --------------------------------------------------------- */

static uint64_t g_rng = 88172645463325252ull;

static double unit_rand(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void check_accuracy(const char *name, uint64_t *v, size_t n)
{
    aims_metrics *mx = mk();
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(aims_metrics_observe(mx, name, NULL, v[i]), AIMS_OK);
    }
    qsort(v, n, sizeof v[0], cmp_u64);
    const double qs[] = {0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999};
    for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
        double got = 0;
        assert_int_equal(aims_metrics_quantile(mx, name, NULL, qs[k], &got), AIMS_OK);
        const double want = (double)v[(size_t)(qs[k] * (double)(n - 1))];
        const double rel = fabs(got - want) / want;
        if (rel > 0.03) {
            fail_msg("%s q=%g: got %.0f want %.0f (%.2f %%)", name, qs[k], got, want, rel * 100);
        }
    }
    aims_metrics_destroy(mx);
}

static void test_metrics_quantile_accuracy(void **state)
{
    (void)state;
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof *v);
    assert_non_null(v);
    /* Uniform 1 us .. 10 ms */
    for (size_t i = 0; i < N; i++) {
        v[i] = 1000 + (uint64_t)(unit_rand() * 9999000.0);
    }
    check_accuracy("uniform", v, N);
    /* Exponential, mean 2 ms (plus 1 us floor) */
    for (size_t i = 0; i < N; i++) {
        v[i] = 1000 + (uint64_t)(-log(1.0 - unit_rand()) * 2e6);
    }
    check_accuracy("exponential", v, N);
    /* Log-uniform 1 us .. 100 s: every octave of the range */
    for (size_t i = 0; i < N; i++) {
        v[i] = (uint64_t)exp(log(1e3) + unit_rand() * (log(1e11) - log(1e3)));
    }
    check_accuracy("loguniform", v, N);
    /* Bimodal: 90 % near 200 us, 10 % near 50 ms (a tail) */
    for (size_t i = 0; i < N; i++) {
        v[i] = unit_rand() < 0.9 ? 150000 + (uint64_t)(unit_rand() * 100000.0)
                                 : 40000000 + (uint64_t)(unit_rand() * 20000000.0);
    }
    check_accuracy("bimodal", v, N);
    free(v);
}

/* ---- Prometheus format ---------------------------------------------------------- */

static int is_name_char(char c, int first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Parse one sample line "name{l="v",...} value"; returns the value, stores the
 * name and the le label (or "") in the given buffers. Fails the test on a bad line. */
static double parse_sample(const char *line, char *name, char *le)
{
    size_t i = 0;
    while (is_name_char(line[i], i == 0)) {
        name[i] = line[i];
        i++;
    }
    name[i] = '\0';
    assert_true(i > 0);
    le[0] = '\0';
    if (line[i] == '{') {
        i++;
        while (line[i] != '}') {
            const size_t ls = i;
            while (is_name_char(line[i], i == ls) && line[i] != ':') {
                i++;
            }
            assert_true(i > ls);
            const int is_le = i - ls == 2 && strncmp(line + ls, "le", 2) == 0;
            assert_int_equal(line[i], '=');
            assert_int_equal(line[i + 1], '"');
            i += 2;
            const size_t vs = i;
            while (line[i] != '"') {
                assert_true(line[i] != '\0' && line[i] != '\n');
                i += line[i] == '\\' ? 2 : 1;
            }
            if (is_le) {
                memcpy(le, line + vs, i - vs);
                le[i - vs] = '\0';
            }
            i++;
            if (line[i] == ',') {
                i++;
            } else {
                assert_int_equal(line[i], '}');
            }
        }
        i++;
    }
    assert_int_equal(line[i], ' ');
    char *end = NULL;
    const double v = strtod(line + i + 1, &end);
    assert_true(end != line + i + 1);
    assert_true(*end == '\n');
    return v;
}

static void test_metrics_prometheus_parses(void **state)
{
    (void)state;
    aims_metrics *mx = mk();
    assert_int_equal(aims_metrics_count(mx, "aims_requests_total", "service=\"infer\"", 5), AIMS_OK);
    assert_int_equal(aims_metrics_count(mx, "aims_requests_total", "service=\"train\"", 2), AIMS_OK);
    assert_int_equal(aims_metrics_set_gauge(mx, "aims_inflight", NULL, 3.0), AIMS_OK);
    assert_int_equal(aims_metrics_set_gauge(mx, "aims_weird", "k=\"inf\"", INFINITY), AIMS_OK);
    assert_int_equal(aims_metrics_set_gauge(mx, "aims_weird", "k=\"nan\"", NAN), AIMS_OK);
    for (uint64_t ns = 500; ns < 200000000000ull; ns = ns * 3 / 2) {
        assert_int_equal(aims_metrics_observe(mx, "aims_latency_seconds", "service=\"infer\"", ns),
                         AIMS_OK);
        assert_int_equal(aims_metrics_observe(mx, "aims_batch_ns", NULL, ns / 7 + 1), AIMS_OK);
    }
    char *txt = NULL;
    size_t len = 0;
    assert_int_equal(aims_metrics_prometheus(mx, &txt, &len), AIMS_OK);
    assert_int_equal(strlen(txt), len);
    assert_true(len > 0 && txt[len - 1] == '\n');
    char type_name[160] = "", type_kind[32] = "", name[160], le[64];
    double last_cum = -1, inf_count = -1;
    int n_types = 0, n_samples = 0, n_hist = 0;
    for (const char *line = txt; *line != '\0'; line = strchr(line, '\n') + 1) {
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_int_equal(sscanf(line, "# TYPE %159s %31s", type_name, type_kind), 2);
            assert_true(strcmp(type_kind, "counter") == 0 || strcmp(type_kind, "gauge") == 0 ||
                        strcmp(type_kind, "histogram") == 0);
            n_types++;
            last_cum = -1;
            continue;
        }
        assert_true(line[0] != '#');
        const double v = parse_sample(line, name, le);
        n_samples++;
        /* The sample belongs to the current # TYPE */
        const size_t tl = strlen(type_name);
        assert_int_equal(strncmp(name, type_name, tl), 0);
        if (strcmp(type_kind, "histogram") == 0) {
            const char *suffix = name + tl;
            if (strcmp(suffix, "_bucket") == 0) {
                assert_true(le[0] != '\0');
                assert_true(v >= last_cum); /* cumulative */
                last_cum = v;
                if (strcmp(le, "+Inf") == 0) {
                    inf_count = v;
                    n_hist++;
                } else {
                    char *end = NULL;
                    (void)strtod(le, &end);
                    assert_true(*end == '\0');
                }
            } else if (strcmp(suffix, "_count") == 0) {
                assert_true(v == inf_count);
                last_cum = -1;
            } else {
                assert_string_equal(suffix, "_sum");
                assert_true(v > 0);
            }
        } else {
            assert_string_equal(name, type_name);
        }
    }
    assert_int_equal(n_types, 5);
    assert_int_equal(n_hist, 2);
    assert_true(n_samples > 50);
    assert_non_null(strstr(txt, "aims_weird{k=\"inf\"} +Inf\n"));
    assert_non_null(strstr(txt, "aims_weird{k=\"nan\"} NaN\n"));
    assert_non_null(strstr(txt, "aims_latency_seconds_bucket{service=\"infer\",le=\"0.001\"} "));
    assert_non_null(strstr(txt, "aims_batch_ns_bucket{le=\"+Inf\"} "));
    aims_free(txt);
    /* Empty registry: empty text. */
    aims_metrics *e = mk();
    assert_int_equal(aims_metrics_prometheus(e, &txt, &len), AIMS_OK);
    assert_int_equal(len, 0);
    assert_string_equal(txt, "");
    aims_free(txt);
    aims_metrics_destroy(e);
    aims_metrics_destroy(mx);
}

/* ---- concurrency ---------------------------------------------------------------- */

static aims_metrics *g_mx;
static atomic_int g_fail; /* cmocka asserts are not thread-safe: count failures */

static void *conc_worker(void *arg)
{
    const long t = (long)(intptr_t)arg;
    char labels[32];
    snprintf(labels, sizeof labels, "t=\"%ld\"", t % 2);
    for (int k = 0; k < 20000; k++) {
        if (aims_metrics_observe(g_mx, "lat", NULL, 1000 + (uint64_t)k) != AIMS_OK) {
            atomic_fetch_add(&g_fail, 1);
        }
        if (aims_metrics_count(g_mx, "n", labels, 1) != AIMS_OK) {
            atomic_fetch_add(&g_fail, 1);
        }
        if (k % 1000 == 0) {
            char name[32];
            snprintf(name, sizeof name, "g_%ld_%d", t, k); /* grows the table meanwhile */
            if (aims_metrics_set_gauge(g_mx, name, NULL, (double)k) != AIMS_OK) {
                atomic_fetch_add(&g_fail, 1);
            }
            char *txt = NULL;
            if (aims_metrics_prometheus(g_mx, &txt, NULL) != AIMS_OK) {
                atomic_fetch_add(&g_fail, 1);
            }
            aims_free(txt);
            double q = 0;
            if (aims_metrics_quantile(g_mx, "lat", NULL, 0.5, &q) != AIMS_OK) {
                atomic_fetch_add(&g_fail, 1);
            }
        }
    }
    return NULL;
}

static void test_metrics_concurrent_updates(void **state)
{
    (void)state;
    g_mx = mk();
    assert_int_equal(aims_metrics_observe(g_mx, "lat", NULL, 1000), AIMS_OK);
    pthread_t th[4];
    for (long t = 0; t < 4; t++) {
        assert_int_equal(pthread_create(&th[t], NULL, conc_worker, (void *)(intptr_t)t), 0);
    }
    for (int t = 0; t < 4; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
    }
    assert_int_equal(atomic_load(&g_fail), 0);
    char *txt = NULL;
    assert_int_equal(aims_metrics_prometheus(g_mx, &txt, NULL), AIMS_OK);
    assert_non_null(strstr(txt, "lat_count 80001\n"));
    assert_non_null(strstr(txt, "n{t=\"0\"} 40000\n"));
    assert_non_null(strstr(txt, "n{t=\"1\"} 40000\n"));
    aims_free(txt);
    aims_metrics_destroy(g_mx);
}

/* ---- allocation failures ---------------------------------------------------------- */

static aims_status op_metrics(void *ctx)
{
    (void)ctx;
    aims_metrics *mx = NULL;
    aims_status rc = aims_metrics_create(&mx);
    if (rc != AIMS_OK) {
        return rc;
    }
    for (int i = 0; i < 40 && rc == AIMS_OK; i++) { /* > 16: the table grows twice */
        char name[32];
        snprintf(name, sizeof name, "m%d", i);
        rc = i % 3 == 0   ? aims_metrics_count(mx, name, "a=\"b\"", 1)
             : i % 3 == 1 ? aims_metrics_set_gauge(mx, name, NULL, 1.5)
                          : aims_metrics_observe(mx, name, NULL, (uint64_t)i * 1000);
    }
    double q = 0;
    if (rc == AIMS_OK) {
        rc = aims_metrics_quantile(mx, "m2", NULL, 0.9, &q);
    }
    char *txt = NULL;
    if (rc == AIMS_OK) {
        rc = aims_metrics_prometheus(mx, &txt, NULL);
    }
    aims_free(txt);
    aims_metrics_destroy(mx);
    return rc;
}

/* Series handles (aimsi_metrics_series): looked up once and cached in the
 * slot, updates land in the same series the by-name calls update, a name
 * already used as another kind gives NULL (updates through NULL are no-ops). */
static void test_metrics_series_handles(void **state)
{
    (void)state;
    aims_metrics *mx = mk();
    _Atomic(aimsi_mx_series *) cslot = NULL, hslot = NULL, bad = NULL;
    aimsi_mx_series *c = aimsi_metrics_series(mx, &cslot, 'c', "calls_total", "svc=\"a\"");
    assert_non_null(c);
    assert_ptr_equal(atomic_load(&cslot), c);
    assert_ptr_equal(aimsi_metrics_series(mx, &cslot, 'c', "calls_total", "svc=\"a\""), c);
    aimsi_mx_add(c, 5);
    assert_int_equal(aims_metrics_count(mx, "calls_total", "svc=\"a\"", 2), AIMS_OK);
    aimsi_mx_series *h = aimsi_metrics_series(mx, &hslot, 'h', "lat_ns", "svc=\"a\"");
    assert_non_null(h);
    for (int k = 0; k < 10; k++) {
        aimsi_mx_observe(h, 2000000);
    }
    double q = 0;
    assert_int_equal(aims_metrics_quantile(mx, "lat_ns", "svc=\"a\"", 0.5, &q), AIMS_OK);
    assert_true(fabs(q - 2e6) / 2e6 < 0.035);
    assert_null(aimsi_metrics_series(mx, &bad, 'h', "calls_total", "svc=\"b\""));
    assert_null(atomic_load(&bad));
    aimsi_mx_add(NULL, 1);
    aimsi_mx_observe(NULL, 1);
    char *txt = NULL;
    assert_int_equal(aims_metrics_prometheus(mx, &txt, NULL), AIMS_OK);
    assert_non_null(strstr(txt, "calls_total{svc=\"a\"} 7\n"));
    assert_null(strstr(txt, "svc=\"b\""));
    aims_free(txt);
    aims_metrics_destroy(mx);
}

static void test_metrics_alloc_failure_loop(void **state)
{
    (void)state;
    ta_fail_loop("metrics", op_metrics, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics_hist_buckets_cover_and_bound_error, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_rejects_bad_args, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_counters_gauges_quantile_edges, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_quantile_accuracy, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_prometheus_parses, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_concurrent_updates, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_series_handles, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_alloc_failure_loop, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
