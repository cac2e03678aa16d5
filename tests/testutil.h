/*
 * testutil.h - helpers shared by the Check suites.
 */
#ifndef HM_TESTUTIL_H
#define HM_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hallmark.h"

/* Directory holding the committed vectors (set by make check). */
static inline const char *test_vectors_dir(void)
{
    const char *d = getenv("HM_TEST_VECTORS");
    return d ? d : "tests/vectors";
}

static inline FILE *test_open_vectors(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", test_vectors_dir(), name);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    return f;
}

static inline void test_hex(const char *hex, unsigned char *out, size_t n)
{
    ck_assert_uint_eq(strlen(hex), 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (unsigned char)v;
    }
}

/* A key from a fixed byte pattern, so that suites are reproducible. */
static inline hm_key *test_key(unsigned char base)
{
    unsigned char b[HM_KEY_BYTES];
    hm_key *k = NULL;
    for (int i = 0; i < HM_KEY_BYTES; i++)
        b[i] = (unsigned char)(base + 37 * i);
    ck_assert_int_eq(hm_key_from_bytes(&k, b, sizeof b), HM_OK);
    return k;
}

static inline hm_ctx *test_ctx(const hm_key *k, const char *spec)
{
    hm_ctx *c = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    int rc = hm_ctx_new(&c, k, spec, NULL, msg, sizeof msg);
    ck_assert_msg(rc == HM_OK, "hm_ctx_new(%s): %s", spec, msg);
    return c;
}

/* SplitMix64 for test randomness (fixed seeds: results reproducible). */
static inline uint64_t test_rand(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static inline double test_uniform(uint64_t *s)
{
    return (double)(test_rand(s) >> 11) * 0x1p-53;
}

static inline int test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
