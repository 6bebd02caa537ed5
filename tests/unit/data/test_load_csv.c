/*
 * test_load_csv.c -- white-box tests of load_csv.c and of what it stands on
 * and beside: numparse.c (the number parser) and load_svmlight.c.
 *
 * The number parser is checked bit for bit against the C library's strtof on
 * about a million generated strings (shortest round-trip forms, long digit
 * strings, exact float midpoints and their neighbours, huge/tiny exponents),
 * because the fast paths rest on a rounding argument that a test must back.
 * The loaders are called directly (aimsi_load_*) so the CSV's two internal
 * paths (quote-free fast path, general tokenizer) can be compared on the
 * same table.
 */
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data/aimsi_data.h"
#include "testalloc.h"

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static int same_float(float a, float b)
{
    if (isnan(a) && isnan(b)) {
        return 1;
    }
    return memcmp(&a, &b, sizeof a) == 0;
}

/* aimsi_parse_float must accept exactly what strtof accepts completely (on
 * the decimal subset) and give the same bits. */
static void check_vs_strtof(const char *s)
{
    float mine = 0.0f;
    const int rc = aimsi_parse_float(s, s + strlen(s), &mine);
    char *endp = NULL;
    const float ref = strtof(s, &endp);
    if (rc != 0) {
        fail_msg("aimsi_parse_float rejected \"%s\" (strtof: %a)", s, (double)ref);
    }
    if (*endp != '\0') {
        fail_msg("strtof did not consume \"%s\"", s);
    }
    if (!same_float(mine, ref)) {
        fail_msg("\"%s\": got %a, strtof %a", s, (double)mine, (double)ref);
    }
}

static void random_digits(char *buf, size_t cap)
{
    const int nd = 1 + (int)(rnd() % 40);
    const int dp = (int)(rnd() % (uint64_t)(nd + 2));
    size_t k = 0;
    if (rnd() % 4 == 0) {
        buf[k++] = (rnd() % 2) ? '-' : '+';
    }
    for (int j = 0; j < nd && k + 16 < cap; j++) {
        if (j == dp) {
            buf[k++] = '.';
        }
        buf[k++] = (char)('0' + rnd() % 10);
    }
    if (rnd() % 2) {
        k += (size_t)snprintf(buf + k, cap - k, "e%d", (int)(rnd() % 120) - 60);
    }
    buf[k] = '\0';
}

static void random_float_text(char *buf, size_t cap)
{
    const uint32_t bits = (uint32_t)rnd() & 0x7fffffffu;
    float f;
    memcpy(&f, &bits, sizeof f);
    if (!isfinite(f)) {
        f = 1.0f;
    }
    const float g = nextafterf(f, INFINITY);
    const double mid = ((double)f + (double)g) / 2.0;
    switch (rnd() % 8) {
    case 0: snprintf(buf, cap, "%.9g", (double)f); break;
    case 1: snprintf(buf, cap, "%.6g", (double)f); break;
    case 2: snprintf(buf, cap, "%.40g", mid); break; /* exact midpoint */
    case 3: snprintf(buf, cap, "%.17g", nextafter(mid, INFINITY)); break;
    case 4: snprintf(buf, cap, "%.17g", nextafter(mid, 0.0)); break;
    case 5:
        snprintf(buf, cap, "%.*f", (int)(rnd() % 14),
                 (double)(rnd() % 100000000u) / (double)(1u + rnd() % 1000u));
        break;
    case 6: snprintf(buf, cap, "%llu", (unsigned long long)(rnd() >> (rnd() % 64))); break;
    default: random_digits(buf, cap); break;
    }
}

/* ---- numparse ----------------------------------------------------------------- */

static void test_numparse_edge_cases_match_strtof(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "0", "-0", "+0", "0.0", "-0.0e5", "1", "+1", "-1", "1.", ".5", "-.5", "1e0", "1E+2",
        "1e-5", "3.4028235e38", "3.4028236e38", "3.40282357e38", "1e39", "-1e39", "1e-45",
        "1.4e-45", "7e-46", "7.1e-46", "1e-50", "1.17549435e-38", "1.1754942e-38",
        "16777216", "16777217", "16777218", "16777217.000000000000000000001", "33554435",
        "0.1", "0.2", "0.3", "4.2e-7", "9999999999999999999", "18446744073709551615",
        "18446744073709551616", "1e19", "1e20", "123456789012345678901234567890",
        ("0.000000000000000000000000000000000000000000001401298464324817070923729583289916"
         "131280e0"),
        "2.98023223876953125e-8", "2.98023223876953125000000000000000000001e-8",
        "8.589973e9", "4294967295", "4294967296", "0.00000000000001", "1e-12", "1.5e-13",
        "9007199254740993", "9007199254740993e-12", "00000000000000000000000000001",
        "1e100000000000000000000", "1e-100000000000000000000", "nan", "NaN", "-nan", "inf",
        "-INF", "Infinity", "+infinity"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_vs_strtof(cases[i]);
    }
}

static void test_numparse_random_strings_match_strtof(void **state)
{
    (void)state;
    char buf[128];
    for (long it = 0; it < 1000000; it++) {
        random_float_text(buf, sizeof buf);
        check_vs_strtof(buf);
    }
}

static void test_numparse_long_inputs_match_strtof(void **state)
{
    (void)state;
    char buf[2100];
    for (int it = 0; it < 2000; it++) {
        const size_t nd = 100 + rnd() % 1800;
        size_t k = 0;
        if (rnd() % 2) {
            memcpy(buf, "0.", 2);
            k = 2;
            const size_t zeros = rnd() % 60;
            for (size_t z = 0; z < zeros; z++) {
                buf[k++] = '0';
            }
        }
        for (size_t j = 0; j < nd && k < 2000; j++) {
            buf[k++] = (char)('0' + rnd() % 10);
        }
        /* sometimes a float midpoint followed by a long tail of zeros and a 1 */
        snprintf(buf + k, sizeof buf - k, "e%d", (int)(rnd() % 100) - 1200 + (int)nd);
        check_vs_strtof(buf);
    }
    /* exact midpoint 1 + 2^-24 followed by many zeros, then a final 1 */
    char mid[1200];
    const char *m = "1.000000059604644775390625";
    size_t k = strlen(m);
    memcpy(mid, m, k);
    while (k < 1100) {
        mid[k++] = '0';
    }
    mid[k] = '\0';
    check_vs_strtof(mid);
    mid[k++] = '1';
    mid[k] = '\0';
    check_vs_strtof(mid);
}

static void test_numparse_rejects_non_numbers(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "-", "+", ".", "-.", "e5", "1e", "1e+", "1e-",
                                      "1x", " 1", "1 ", "0x10", "1,5", "--1", "+-1",
                                      "nan(1)", "infx", "in", "1.2.3", "1e5.5", "\xff",
                                      "1\n", "NA", "?", "1_000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        float v = 42.0f;
        assert_int_equal(aimsi_parse_float(bad[i], bad[i] + strlen(bad[i]), &v), -1);
        assert_true(v == 42.0f); /* output untouched */
    }
    float v = 0.0f;
    assert_int_equal(aimsi_parse_float(NULL, NULL, &v), -1);
    /* the range end is respected: "12" out of "123" */
    const char *s = "123";
    assert_int_equal(aimsi_parse_float(s, s + 2, &v), 0);
    assert_true(v == 12.0f);
}

static void test_numparse_ignores_locale(void **state)
{
    (void)state;
    const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "C.UTF-8"};
    const char *old = setlocale(LC_NUMERIC, NULL);
    char saved[64];
    snprintf(saved, sizeof saved, "%s", old != NULL ? old : "C");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (setlocale(LC_NUMERIC, names[i]) == NULL) {
            continue;
        }
        float v = 0.0f;
        const char *a = "1.5";
        assert_int_equal(aimsi_parse_float(a, a + 3, &v), 0);
        assert_true(v == 1.5f);
        const char *b = "1.0000000000000000000000000000001e-40"; /* slow path */
        assert_int_equal(aimsi_parse_float(b, b + strlen(b), &v), 0);
        assert_true(v > 0.0f && v < 1.1e-40f);
    }
    setlocale(LC_NUMERIC, saved);
}

/* ---- CSV ------------------------------------------------------------------------ */

typedef struct opt_kv {
    aims_param p;
    int64_t v;
} opt_kv;

static aims_status csv(const char *text, const opt_kv *kv, size_t n, aims_dataset **out)
{
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(aims_loadopts_set_param_i64(o, kv[i].p, kv[i].v), AIMS_OK);
    }
    const aims_status rc = aimsi_load_csv(text, strlen(text), "t.csv", o, out);
    aims_loadopts_destroy(o);
    return rc;
}

static aims_status svm(const char *text, const opt_kv *kv, size_t n, aims_dataset **out)
{
    aims_loadopts *o = NULL;
    assert_int_equal(aims_loadopts_create(&o), AIMS_OK);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(aims_loadopts_set_param_i64(o, kv[i].p, kv[i].v), AIMS_OK);
    }
    const aims_status rc = aimsi_load_svmlight(text, strlen(text), "t.svm", o, out);
    aims_loadopts_destroy(o);
    return rc;
}

static void expect_error(aims_status rc, aims_status want, const char *needle)
{
    assert_int_equal(rc, want);
    if (strstr(aims_errmsg(), needle) == NULL) {
        fail_msg("error message \"%s\" lacks \"%s\"", aims_errmsg(), needle);
    }
}

static void test_csv_basic_values_and_labels(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    const opt_kv kv[] = {{AIMS_LOAD_LABEL_COLUMN, -2}};
    assert_int_equal(csv("1,2.5,0\n-3,4e2,2\n7,-0.125,1\n", kv, 1, &ds), AIMS_OK);
    assert_int_equal(ds->rows, 3);
    assert_int_equal(ds->cols, 2);
    const float want[] = {1, 2.5f, -3, 400, 7, -0.125f};
    assert_memory_equal(ds->x, want, sizeof want);
    assert_int_equal(ds->labels[0], 0);
    assert_int_equal(ds->labels[1], 2);
    assert_int_equal(ds->labels[2], 1);
    assert_int_equal(ds->num_classes, 3);
    assert_null(ds->targets);
    assert_int_equal(aimsi_dataset_check(ds), AIMS_OK);
    aims_dataset_destroy(ds);

    /* label in the middle, float targets */
    const opt_kv kv2[] = {{AIMS_LOAD_LABEL_COLUMN, 1}, {AIMS_LOAD_LABEL_KIND, 1}};
    assert_int_equal(csv("1,0.5,2\n3,-1.5,4\n", kv2, 2, &ds), AIMS_OK);
    assert_int_equal(ds->cols, 2);
    assert_null(ds->labels);
    assert_true(ds->targets[0] == 0.5f && ds->targets[1] == -1.5f);
    assert_true(ds->x[2] == 3.0f && ds->x[3] == 4.0f);
    aims_dataset_destroy(ds);

    /* a lone label column leaves no features */
    const opt_kv kv3[] = {{AIMS_LOAD_LABEL_COLUMN, 0}};
    assert_int_equal(csv("1\n0\n", kv3, 1, &ds), AIMS_OK);
    assert_int_equal(ds->cols, 0);
    assert_null(ds->x);
    assert_int_equal(ds->num_classes, 2);
    aims_dataset_destroy(ds);
}

static void test_csv_quotes_crlf_bom_blank_lines(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    const opt_kv kv[] = {{AIMS_LOAD_HEADER, 1}, {AIMS_LOAD_LABEL_COLUMN, 0}};
    const char *text = "\xEF\xBB\xBF\"label\",\"a, \"\"quoted\"\"\nname\",b\r\n"
                       "\r\n"
                       "  \n"
                       "1,\" 2.5 \",3\r\n"
                       "0,4,\"5\"\r\n"
                       "2 , 6 ,7"; /* no final newline, blanks around fields */
    assert_int_equal(csv(text, kv, 2, &ds), AIMS_OK);
    assert_int_equal(ds->rows, 3);
    assert_int_equal(ds->cols, 2);
    const float want[] = {2.5f, 3, 4, 5, 6, 7};
    assert_memory_equal(ds->x, want, sizeof want);
    assert_int_equal(ds->labels[2], 2);
    aims_dataset_destroy(ds);

    /* tab delimiter: a tab is then a separator, not a blank */
    const opt_kv kv2[] = {{AIMS_LOAD_DELIMITER, '\t'}};
    assert_int_equal(csv("1\t2\n3\t4\n", kv2, 1, &ds), AIMS_OK);
    assert_int_equal(ds->cols, 2);
    assert_true(ds->x[3] == 4.0f);
    aims_dataset_destroy(ds);
}

/* Serialise a random table plainly and with quotes: both paths must agree. */
static void test_csv_fast_and_quoted_paths_agree(void **state)
{
    (void)state;
    enum { ROWS = 300, COLS = 9 };
    char *plain = malloc(ROWS * COLS * 40);
    char *quoted = malloc(ROWS * COLS * 40);
    assert_non_null(plain);
    assert_non_null(quoted);
    size_t a = 0;
    size_t b = 0;
    for (int r = 0; r < ROWS; r++) {
        for (int c = 0; c < COLS; c++) {
            char f[48];
            if (c == 0) {
                snprintf(f, sizeof f, "%d", (int)(rnd() % 5));
            } else if (rnd() % 3 == 0) {
                snprintf(f, sizeof f, "%u", (unsigned)(rnd() % 4000000000u));
            } else {
                random_float_text(f, sizeof f);
            }
            const char *sep = (c + 1 < COLS) ? "," : ((r % 2) ? "\r\n" : "\n");
            a += (size_t)sprintf(plain + a, "%s%s", f, sep);
            if (rnd() % 7 == 0) {
                b += (size_t)sprintf(quoted + b, "\"%s\"%s", f, sep);
            } else {
                b += (size_t)sprintf(quoted + b, "%s%s", f, sep);
            }
        }
    }
    const opt_kv kv[] = {{AIMS_LOAD_LABEL_COLUMN, 0}, {AIMS_LOAD_NONFINITE, 1}};
    aims_dataset *d1 = NULL;
    aims_dataset *d2 = NULL;
    assert_int_equal(csv(plain, kv, 2, &d1), AIMS_OK);
    assert_int_equal(csv(quoted, kv, 2, &d2), AIMS_OK);
    assert_int_equal(d1->rows, ROWS);
    assert_int_equal(d2->rows, ROWS);
    assert_memory_equal(d1->x, d2->x, sizeof(float) * ROWS * (COLS - 1));
    assert_memory_equal(d1->labels, d2->labels, sizeof(int32_t) * ROWS);
    /* and each value is what strtof says */
    const char *p = plain;
    for (size_t i = 0; i < ROWS * COLS; i++) {
        char *e = NULL;
        const float ref = strtof(p, &e);
        const size_t r = i / COLS;
        const size_t c = i % COLS;
        if (c > 0) {
            assert_true(same_float(d1->x[r * (COLS - 1) + c - 1], ref));
        }
        p = e + strspn(e, ",\r\n");
    }
    aims_dataset_destroy(d1);
    aims_dataset_destroy(d2);
    free(plain);
    free(quoted);
}

static void test_csv_errors_name_line_and_column(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    expect_error(csv("1,2,3\n4,5,6\n7,8\n", NULL, 0, &ds), AIMS_E_CORRUPT,
                 "t.csv:3: expected 3 fields, found 2");
    expect_error(csv("1,2\n\n3,4,5\n", NULL, 0, &ds), AIMS_E_CORRUPT,
                 "t.csv:3: expected 2 fields, found 3");
    expect_error(csv("1,2\n3,abc\n", NULL, 0, &ds), AIMS_E_CORRUPT, "t.csv:2: column 2");
    expect_error(csv("1,2\n3,abc\n", NULL, 0, &ds), AIMS_E_CORRUPT, "\"abc\"");
    expect_error(csv("1,2\n3,\"4\n5,6\n", NULL, 0, &ds), AIMS_E_CORRUPT,
                 "t.csv:2: unterminated quoted field");
    expect_error(csv("1,2\n\"3\"x,4\n", NULL, 0, &ds), AIMS_E_CORRUPT,
                 "t.csv:2: unexpected bytes after a closing quote");
    expect_error(csv("1,\xff\xfe\n", NULL, 0, &ds), AIMS_E_CORRUPT, "\\xff\\xfe");
    /* errors come in file order whatever their kind */
    expect_error(csv("1,2\nx,2\n\"3,4\n", NULL, 0, &ds), AIMS_E_CORRUPT, "t.csv:2:");
    /* quoted newline moves the line counter */
    const opt_kv names[] = {{AIMS_LOAD_HEADER, 1}};
    expect_error(csv("\"a\nb\",c\n3,4\n5\n", names, 1, &ds), AIMS_E_CORRUPT,
                 "t.csv:4: expected 2 fields, found 1");
    const opt_kv lab[] = {{AIMS_LOAD_LABEL_COLUMN, -2}};
    expect_error(csv("1,0\n2,-1\n", lab, 1, &ds), AIMS_E_CORRUPT, "label_kind=1");
    expect_error(csv("1,0\n2,1.5\n", lab, 1, &ds), AIMS_E_CORRUPT, "t.csv:2: column 2");
    expect_error(csv("1,0\n2,99999999\n", lab, 1, &ds), AIMS_E_CORRUPT, "above the limit");
    expect_error(csv("1,0\n2,\n", lab, 1, &ds), AIMS_E_CORRUPT, "missing class label");
    const opt_kv far[] = {{AIMS_LOAD_LABEL_COLUMN, 5}};
    expect_error(csv("1,0\n", far, 1, &ds), AIMS_E_INVAL, "label_column 5");
    const opt_kv dq[] = {{AIMS_LOAD_DELIMITER, '"'}};
    expect_error(csv("1\n", dq, 1, &ds), AIMS_E_INVAL, "delimiter");
    expect_error(csv("\n \r\n\n", NULL, 0, &ds), AIMS_E_INVAL, "no data rows");
    const opt_kv hdr[] = {{AIMS_LOAD_HEADER, 1}};
    expect_error(csv("a,b\n", hdr, 1, &ds), AIMS_E_INVAL, "no data rows");
    assert_null(ds);
}

static void test_csv_missing_policy(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    const char *text = "1,,NA\nnan,?,N/A\n-NaN,null,3\n";
    /* nan is a number that is not finite, not a missing marker: refused by default */
    expect_error(csv(text, NULL, 0, &ds), AIMS_E_CORRUPT, "t.csv:2: column 1: is not a finite");
    const opt_kv allow[] = {{AIMS_LOAD_NONFINITE, 1}};
    assert_int_equal(csv(text, allow, 1, &ds), AIMS_OK);
    assert_int_equal(ds->rows, 3);
    assert_true(ds->x[0] == 1.0f);
    for (int i = 1; i < 8; i++) {
        assert_true(isnan(ds->x[i]));
    }
    assert_true(ds->x[8] == 3.0f);
    aims_dataset_destroy(ds);
    const opt_kv strict[] = {{AIMS_LOAD_MISSING, 0}, {AIMS_LOAD_NONFINITE, 1}};
    expect_error(csv(text, strict, 2, &ds), AIMS_E_CORRUPT, "t.csv:1: column 2: missing value");
    /* inf and overflowing literals are numbers, not missing values */
    assert_int_equal(csv("inf,-1e39\n", strict, 2, &ds), AIMS_OK);
    assert_true(isinf(ds->x[0]) && isinf(ds->x[1]) && ds->x[1] < 0);
    aims_dataset_destroy(ds);
    ds = NULL;
    /* ... and refused by default, naming file, line and column (fast and slow paths) */
    expect_error(csv("1,2\n3,inf\n", NULL, 0, &ds), AIMS_E_CORRUPT, "t.csv:2: column 2:");
    expect_error(csv("1,2\n3,1e999\n", NULL, 0, &ds), AIMS_E_CORRUPT,
                 "allow_nonfinite=1");
    expect_error(csv("1,2\n\"3\",-INF\n", NULL, 0, &ds), AIMS_E_CORRUPT, "t.csv:2: column 2:");
    expect_error(csv("1,2\n3,NaN\n", NULL, 0, &ds), AIMS_E_CORRUPT, "\"NaN\"");
    const opt_kv ftgt[] = {{AIMS_LOAD_LABEL_COLUMN, 0}, {AIMS_LOAD_LABEL_KIND, 1}};
    expect_error(csv("1,2\n1e40,3\n", ftgt, 2, &ds), AIMS_E_CORRUPT, "t.csv:2: column 1:");
    assert_null(ds);
    /* missing float targets follow the policy too */
    const opt_kv tgt[] = {{AIMS_LOAD_LABEL_COLUMN, 1}, {AIMS_LOAD_LABEL_KIND, 1}};
    assert_int_equal(csv("1,NA\n", tgt, 2, &ds), AIMS_OK);
    assert_true(isnan(ds->targets[0]));
    aims_dataset_destroy(ds);
}

static void test_csv_skip_header_and_max_rows(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    const char *text = "# produced by a tool\n150,4,a,b\n1,2,3,4\n5,6,7,8\n9,10,11,12\n";
    const opt_kv kv[] = {{AIMS_LOAD_SKIP_ROWS, 1}, {AIMS_LOAD_HEADER, 2},
                         {AIMS_LOAD_MAX_ROWS, 2}};
    assert_int_equal(csv(text, kv, 3, &ds), AIMS_OK);
    assert_int_equal(ds->rows, 2);
    assert_int_equal(ds->cols, 4);
    assert_true(ds->x[7] == 8.0f);
    aims_dataset_destroy(ds);
    /* max_rows stops before a bad line */
    const opt_kv kv2[] = {{AIMS_LOAD_MAX_ROWS, 1}};
    assert_int_equal(csv("1,2\nbad\n", kv2, 1, &ds), AIMS_OK);
    assert_int_equal(ds->rows, 1);
    aims_dataset_destroy(ds);
    /* header=1 fixes the width */
    const opt_kv kv3[] = {{AIMS_LOAD_HEADER, 1}};
    expect_error(csv("a,b,c\n1,2\n", kv3, 1, &ds), AIMS_E_CORRUPT, "expected 3 fields");
}

static void test_csv_unusual_numbers_leave_fast_path(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    const char *text = "1234567890,00001,+5, 7 ,1e3,18446744073709551617,0.5\r\n"
                       "4294967295,0,-0,7,1E-3,-2,.5\n";
    assert_int_equal(csv(text, NULL, 0, &ds), AIMS_OK);
    assert_int_equal(ds->cols, 7);
    const float want[] = {1234567890.0f, 1, 5, 7, 1000, 18446744073709551617.0f, 0.5f,
                          4294967295.0f, 0, -0.0f, 7, 1e-3f, -2, 0.5f};
    for (size_t i = 0; i < 14; i++) {
        assert_true(same_float(ds->x[i], want[i]));
    }
    aims_dataset_destroy(ds);
}

/* A wide first line followed by many short lines must not allocate rows x
 * cols floats (terabytes here) before noticing the ragged rows. */
static void test_csv_wide_first_line_fails_as_corrupt(void **state)
{
    (void)state;
    const size_t cols = 1000000;
    const size_t short_rows = 2000000;
    char *text = malloc(cols * 2 + short_rows * 2 + 1);
    assert_non_null(text);
    size_t k = 0;
    for (size_t i = 0; i < cols; i++) {
        text[k++] = '1';
        text[k++] = (i + 1 < cols) ? ',' : '\n';
    }
    for (size_t i = 0; i < short_rows; i++) {
        text[k++] = '2';
        text[k++] = '\n';
    }
    text[k] = '\0';
    aims_dataset *ds = NULL;
    expect_error(csv(text, NULL, 0, &ds), AIMS_E_CORRUPT,
                 "t.csv:2: expected 1000000 fields, found 1");
    text[cols * 2] = 'x'; /* an earlier error of another kind still comes first */
    expect_error(csv(text, NULL, 0, &ds), AIMS_E_CORRUPT, "t.csv:2: column 1");
    assert_null(ds);
    free(text);
}

/* ---- svmlight -------------------------------------------------------------------- */

static void test_svm_basic(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    const char *text = "\xEF\xBB\xBF# header comment\n"
                       "1 1:0.5 3:2 # trailing\r\n"
                       "\n"
                       "0 qid:7 2:-1\n"
                       "2\n"
                       "1 10:1e2";
    assert_int_equal(svm(text, NULL, 0, &ds), AIMS_OK);
    assert_int_equal(ds->rows, 4);
    assert_int_equal(ds->tok_dim, 10);
    const uint64_t off[] = {0, 2, 3, 3, 4};
    assert_memory_equal(ds->tok_off, off, sizeof off);
    const uint32_t ids[] = {0, 2, 1, 9};
    assert_memory_equal(ds->tok_ids, ids, sizeof ids);
    const float w[] = {0.5f, 2.0f, -1.0f, 100.0f};
    assert_memory_equal(ds->tok_w, w, sizeof w);
    const int32_t lab[] = {1, 0, 2, 1};
    assert_memory_equal(ds->labels, lab, sizeof lab);
    assert_int_equal(ds->num_classes, 3);
    assert_int_equal(ds->cols, 0);
    assert_int_equal(aimsi_dataset_check(ds), AIMS_OK);
    aims_dataset_destroy(ds);
}

static void test_svm_options(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    const opt_kv kv[] = {{AIMS_LOAD_ZERO_BASED, 1}, {AIMS_LOAD_NUM_FEATURES, 50},
                         {AIMS_LOAD_LABEL_KIND, 1}, {AIMS_LOAD_MAX_ROWS, 2}};
    assert_int_equal(svm("-1 0:1 4:2\n+1 49:3\n-1 99:1\n", kv, 4, &ds), AIMS_OK);
    assert_int_equal(ds->rows, 2);
    assert_int_equal(ds->tok_dim, 50);
    assert_true(ds->targets[0] == -1.0f && ds->targets[1] == 1.0f);
    assert_null(ds->labels);
    assert_int_equal(ds->tok_ids[0], 0);
    assert_int_equal(ds->tok_ids[2], 49);
    aims_dataset_destroy(ds);
}

static void test_svm_errors(void **state)
{
    (void)state;
    aims_dataset *ds = NULL;
    expect_error(svm("1 1:1\n-1 2:1\n", NULL, 0, &ds), AIMS_E_CORRUPT,
                 "t.svm:2: negative class label");
    expect_error(svm("1 1:1\n-1 2:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "label_kind=1");
    expect_error(svm("1 3:1 2:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "strictly increasing");
    expect_error(svm("1 3:1 3:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "strictly increasing");
    expect_error(svm("1 0:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "zero_based=1");
    const opt_kv nf[] = {{AIMS_LOAD_NUM_FEATURES, 3}};
    expect_error(svm("1 3:1\n1 4:1\n", nf, 1, &ds), AIMS_E_CORRUPT, "t.svm:2: feature index");
    expect_error(svm("1 a:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "\"a:1\"");
    expect_error(svm("1 2\n", NULL, 0, &ds), AIMS_E_CORRUPT, "expected index:value");
    expect_error(svm("1 2:x\n", NULL, 0, &ds), AIMS_E_CORRUPT, "value is not a number");
    expect_error(svm("1 99999999999:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "too large");
    expect_error(svm("x 1:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "label is not a number");
    expect_error(svm("1.5 1:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "not an integer");
    expect_error(svm("nan 1:1\n", NULL, 0, &ds), AIMS_E_CORRUPT, "not a finite number");
    const opt_kv tk[] = {{AIMS_LOAD_LABEL_KIND, 1}, {AIMS_LOAD_NONFINITE, 1}};
    expect_error(svm("inf 1:1\n", tk, 2, &ds), AIMS_E_CORRUPT, "label is not a finite");
    expect_error(svm("1 1:1\n1 2:nan\n", NULL, 0, &ds), AIMS_E_CORRUPT, "t.svm:2: feature value");
    expect_error(svm("1 1:1e999\n", NULL, 0, &ds), AIMS_E_CORRUPT, "\"1:1e999\"");
    const opt_kv allow[] = {{AIMS_LOAD_NONFINITE, 1}};
    assert_int_equal(svm("1 1:1 2:-inf\n", allow, 1, &ds), AIMS_OK);
    assert_true(isinf(ds->tok_w[1]));
    aims_dataset_destroy(ds);
    ds = NULL;
    expect_error(svm("# only a comment\n\n", NULL, 0, &ds), AIMS_E_INVAL, "no data rows");
    assert_null(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_numparse_edge_cases_match_strtof, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_numparse_random_strings_match_strtof, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_numparse_long_inputs_match_strtof, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_numparse_rejects_non_numbers, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_numparse_ignores_locale, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_csv_basic_values_and_labels, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_csv_quotes_crlf_bom_blank_lines, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_csv_fast_and_quoted_paths_agree, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_csv_errors_name_line_and_column, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_csv_missing_policy, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_csv_skip_header_and_max_rows, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_csv_unusual_numbers_leave_fast_path, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_csv_wide_first_line_fails_as_corrupt, ta_setup,
                                        ta_teardown),
        cmocka_unit_test_setup_teardown(test_svm_basic, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_svm_options, ta_setup, ta_teardown),
        cmocka_unit_test_setup_teardown(test_svm_errors, ta_setup, ta_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
