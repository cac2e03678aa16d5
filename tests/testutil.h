/*
 * testutil.h - helpers shared by the Check suites.
 */
#ifndef HM_TESTUTIL_H
#define HM_TESTUTIL_H

#include <check.h>
#include <math.h>
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

/* A synthetic model's logits over vocab ids for the step after seq[0..n)
 * (depends on the last two tokens, so text repeats a little, as real text
 * does). */
static inline void test_model_logits(const int32_t *seq, size_t n,
                                     float *out, int vocab)
{
    uint64_t s = 1469598103934665603u ^ (uint64_t)(n ? seq[n - 1] : 7) * 31u ^
                 (uint64_t)(n > 1 ? seq[n - 2] : 3) * 131071u;
    for (int v = 0; v < vocab; v++)
        out[v] = (float)(-0.9 * log1p(v) + 2.5 * test_uniform(&s));
}

/* Serve n tokens of test_model_logits after prompt through ctx (bias,
 * then select, as a host does) into out. */
static inline void test_generate(const hm_ctx *ctx, const int32_t *prompt,
                                 size_t np, int32_t *out, size_t n,
                                 uint64_t *rng, int vocab)
{
    float *logits = malloc((size_t)vocab * sizeof *logits);
    int32_t *all = malloc((np + n) * sizeof *all);
    ck_assert(logits != NULL && all != NULL);
    hm_seq *seq;
    ck_assert_int_eq(hm_seq_new(&seq, ctx, 256), HM_OK);
    ck_assert_int_eq(hm_seq_reset(seq, prompt, np), HM_OK);
    memcpy(all, prompt, np * sizeof *all);
    for (size_t t = 0; t < n; t++) {
        hm_row row = {NULL, 0, seq, 1.0f, test_uniform(rng)};
        test_model_logits(all, np + t, logits, vocab);
        ck_assert_int_eq(hm_bias_dense(ctx, logits, 1, (size_t)vocab,
                                       (size_t)vocab, &row, NULL),
                         HM_OK);
        ck_assert_int_eq(hm_select_dense(ctx, logits, 1, (size_t)vocab,
                                         (size_t)vocab, &row, &all[np + t],
                                         NULL),
                         HM_OK);
        ck_assert_int_eq(hm_seq_accept(seq, all[np + t]), HM_OK);
    }
    hm_seq_free(seq);
    memcpy(out, all + np, n * sizeof *out);
    free(all);
    free(logits);
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
