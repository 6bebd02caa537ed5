/*
 * fuzz_policy.c -- fuzz target for the policy file parser
 * (src/svc/authz/policy.c, aims_policy_load_string).
 *
 * The input is copied into a NUL-terminated block and loaded as policy text
 * into a policy that already holds one rule; whatever happens, the old rule
 * must still decide the same way (loading is all or nothing), a few checks
 * run on whatever was loaded, and no libaims block may stay live.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "svc/authz/aimsi_authz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    aims_policy *p = NULL;
    if (aims_policy_create(&p) == AIMS_OK) {
        if (aims_policy_load_string(p, "allow fuzz call keep/*\n", "base") != AIMS_OK) {
            __builtin_trap();
        }
        const aims_status rc = aims_policy_load_string(p, text, "fuzz.policy");
        if (rc != AIMS_OK && aims_policy_check(p, "fuzz", "call", "keep/x") != AIMS_OK) {
            __builtin_trap(); /* a failed load changed the policy */
        }
        (void)aims_policy_check(p, "uid:1000", "register", "echo");
        (void)aims_policy_check(p, "jwt:alice", "call", "infer.a/predict");
        char why[256];
        (void)aimsi_policy_decide(p, "jwt:x", "train read", "train", "trainer", why, sizeof why);
        aims_policy_destroy(p);
    }
    free(text);
    if (aims_alloc_live() != 0) {
        __builtin_trap();
    }
    return 0;
}
