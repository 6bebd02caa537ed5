/*
 * svc_canary.c -- the canary rule: its text form and the decision
 * (aims_lifecycle.h states the rule; svc_life.c applies the outcome).
 *
 * Why a pure function: the decision is what an operator must be able to
 * predict from the documented thresholds, so it reads only the two versions'
 * window counters and the elapsed time -- no clock, no locks -- and the unit
 * test drives it with made-up numbers (tests never assert timings).
 *
 * The rule, in order:
 *   1. fewer than min_calls canary calls: wait (nothing is known yet) --
 *      but not forever: the window is extended once (to 2 x window_ms),
 *      and a canary that still has too few calls then is rolled back with
 *      the reason "insufficient traffic" (the stable version keeps serving:
 *      nothing shows the new one is fit). Why extend once: an instance that
 *      got traffic decides at the end of the first window, one that got
 *      none only after the second, so in a cluster-wide verdict
 *      (svc_verdict.c: first recorded verdict wins) the instance with
 *      evidence records first;
 *   2. canary error rate > stable error rate + max_error_delta: roll back,
 *      at once (errors need no window: each one already cost a fallback);
 *   3. window not over: wait;
 *   4. canary mean latency > max_latency_ratio x stable mean AND more than
 *      latency_slack_us above it: roll back (both, so a 2 us model being
 *      "3x slower" at 6 us does not fail, and neither does a 2 ms jitter);
 *   5. else promote.
 * A stable version with no calls in the window (all traffic on the canary)
 * counts as error rate 0 and is skipped for latency.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/aimsi_kv.h"
#include "../core/aimsi_core.h"
#include "aimsi_life.h"

void aimsi_canary_rule_default(aimsi_canary_rule *r)
{
    r->window_ms = 2000;
    r->min_calls = 50;
    r->max_error_delta = 0.01;
    r->max_latency_ratio = 2.0;
    r->latency_slack_us = 2000;
    r->id[0] = '\0';
}

aims_status aimsi_canary_rule_parse(const char *text, size_t len, aimsi_canary_rule *out)
{
    aimsi_canary_rule r = *out;
    aimsi_kv kv;
    aimsi_kv_pair p;
    aimsi_kv_init(&kv, text, len);
    int st;
    while ((st = aimsi_kv_next(&kv, &p)) == AIMSI_KV_PAIR) {
        char key[32], val[64];
        if (!aimsi_kv_copy(p.key, p.key_len, key, sizeof key) ||
            !aimsi_kv_copy(p.val, p.val_len, val, sizeof val) || val[0] == '\0') {
            return aimsi_err(NULL, AIMS_E_INVAL, "canary rule: bad token '%.*s'",
                             (int)(p.tok_len > 80 ? 80 : p.tok_len), p.tok);
        }
        char *end = NULL;
        const double v = strtod(val, &end);
        if (end == NULL || *end != '\0' || !(v >= 0.0) || v > 1e9) {
            return aimsi_err(NULL, AIMS_E_INVAL, "canary rule: %s=%s is not a number in "
                             "0..1e9", key, val);
        }
        if (strcmp(key, "window_ms") == 0 && v >= 1) {
            r.window_ms = (int64_t)v;
        } else if (strcmp(key, "min_calls") == 0 && v >= 1) {
            r.min_calls = (int64_t)v;
        } else if (strcmp(key, "max_error_delta") == 0 && v <= 1.0) {
            r.max_error_delta = v;
        } else if (strcmp(key, "max_latency_ratio") == 0 && v >= 1.0) {
            r.max_latency_ratio = v;
        } else if (strcmp(key, "latency_slack_us") == 0) {
            r.latency_slack_us = (int64_t)v;
        } else {
            return aimsi_err(NULL, AIMS_E_INVAL, "canary rule: unknown key or value out of "
                             "range: %s=%s (keys: window_ms>=1, min_calls>=1, "
                             "max_error_delta 0..1, max_latency_ratio>=1, latency_slack_us)",
                             key, val);
        }
    }
    if (st == AIMSI_KV_BAD) {
        return aimsi_err(NULL, AIMS_E_INVAL, "canary rule: bad token '%.*s' (want key=value)",
                         (int)(p.tok_len > 80 ? 80 : p.tok_len), p.tok);
    }
    *out = r;
    return AIMS_OK;
}

int aimsi_canary_judge(const aimsi_canary_rule *r, const aimsi_canary_win *stable,
                       const aimsi_canary_win *canary, uint64_t elapsed_ns, char *why,
                       size_t cap)
{
    const uint64_t window_ns = (uint64_t)r->window_ms * 1000000u;
    if (canary->calls < (uint64_t)r->min_calls) {
        if (elapsed_ns >= 2u * window_ns) {
            snprintf(why, cap, "insufficient traffic: %llu of %lld calls in 2 windows of %lld ms",
                     (unsigned long long)canary->calls, (long long)r->min_calls,
                     (long long)r->window_ms);
            return AIMSI_CANARY_ROLLBACK;
        }
        snprintf(why, cap, "%llu of %lld calls seen%s", (unsigned long long)canary->calls,
                 (long long)r->min_calls,
                 elapsed_ns >= window_ns ? " (window extended once)" : "");
        return AIMSI_CANARY_WAIT;
    }
    const double cer = (double)canary->errors / (double)canary->calls;
    const double ser = stable->calls > 0 ? (double)stable->errors / (double)stable->calls : 0.0;
    if (cer > ser + r->max_error_delta) {
        snprintf(why, cap, "error rate %.4f over %llu calls vs stable %.4f (allowed +%.4f)", cer,
                 (unsigned long long)canary->calls, ser, r->max_error_delta);
        return AIMSI_CANARY_ROLLBACK;
    }
    if (elapsed_ns < window_ns) {
        snprintf(why, cap, "window of %lld ms not over", (long long)r->window_ms);
        return AIMSI_CANARY_WAIT;
    }
    const double cl = (double)canary->lat_ns / (double)canary->calls / 1000.0;
    if (stable->calls > 0) {
        const double sl = (double)stable->lat_ns / (double)stable->calls / 1000.0;
        if (cl > r->max_latency_ratio * sl && cl - sl > (double)r->latency_slack_us) {
            snprintf(why, cap, "mean latency %.1f us vs stable %.1f us (allowed x%.2f and "
                     "+%lld us)", cl, sl, r->max_latency_ratio, (long long)r->latency_slack_us);
            return AIMSI_CANARY_ROLLBACK;
        }
        snprintf(why, cap, "%llu calls, error rate %.4f (stable %.4f), mean latency %.1f us "
                 "(stable %.1f us)", (unsigned long long)canary->calls, cer, ser, cl, sl);
    } else {
        snprintf(why, cap, "%llu calls, error rate %.4f, mean latency %.1f us",
                 (unsigned long long)canary->calls, cer, cl);
    }
    return AIMSI_CANARY_PROMOTE;
}
