/*
 * test_greenmass.c - open-model audits (hm_greenmass_new(3)): reference
 * values of the bounds, calibration under many keys, power against a
 * suspect distilled from kgw-biased distributions, dedup, refusals and bad
 * records.
 */
#include "testutil.h"

#include <float.h>

#define LN10 2.302585092994045684

static hm_greenmass *gm_new(const hm_ctx *const *ctxs, size_t n,
                            unsigned flags)
{
    hm_greenmass *g = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    int rc = hm_greenmass_new(&g, ctxs, n, flags, msg, sizeof msg);
    ck_assert_msg(rc == HM_OK, "hm_greenmass_new: %s", msg);
    return g;
}

/* A token green (want 1) or red (want 0) after context on channel 0,
 * found with the public scoring function; skip is the first id tried. */
static int32_t find_token(const hm_ctx *ctx, const int32_t *context,
                          size_t n, int want, int32_t skip)
{
    for (int32_t v = skip;; v++) {
        double s;
        ck_assert_int_eq(hm_token_score(ctx, 0, context, n, v, &s), HM_OK);
        if ((s == 1.0) == (want == 1))
            return v;
    }
}

/* min over a fine grid of l of -l s + sum log(1 - g + g e^{l q}) */
static double grid_chernoff(const double *q, size_t n, double g, double s)
{
    double best = 0;
    for (double l = 0; l <= 200; l += 1e-4) {
        double f = -l * s;
        for (size_t i = 0; i < n; i++)
            f += log(1 - g + g * exp(l * q[i]));
        best = fmin(best, f);
    }
    return best;
}

/* ------------------------------------------------------ reference values */

START_TEST(test_reference)
{
    hm_key *k = test_key(11);
    hm_ctx *ctx = test_ctx(k, "kgw:gamma=0.25,h=1");
    hm_greenmass *g = gm_new((const hm_ctx *const *)&ctx, 1, 0);
    /* Window [9] from two contexts, window [4] from one. */
    int32_t c1[] = {5, 9}, c2[] = {7, 9}, c3[] = {4};
    int32_t g1 = find_token(ctx, c1, 2, 1, 0);
    int32_t r1 = find_token(ctx, c1, 2, 0, 0);
    int32_t g2 = find_token(ctx, c3, 1, 1, 0);
    int32_t i1[] = {g1}, i2[] = {g1, r1}, i3[] = {g2};
    double l1[] = {log(0.5)}, l2[] = {log(0.25), log(0.5)},
           l3[] = {log(0.75)};
    ck_assert_int_eq(hm_greenmass_add(g, c1, 2, i1, l1, 1), HM_OK);
    ck_assert_int_eq(hm_greenmass_add(g, c2, 2, i2, l2, 2), HM_OK);
    ck_assert_int_eq(hm_greenmass_add(g, c3, 1, i3, l3, 1), HM_OK);
    hm_greenmass_stats r;
    ck_assert_int_eq(hm_greenmass_result(g, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.records, 3);
    ck_assert_uint_eq(r.contexts, 3);
    ck_assert_uint_eq(r.dropped_repeat, 0);
    ck_assert_uint_eq(r.listed, 4);
    ck_assert_uint_eq(r.windows, 2);
    ck_assert_uint_eq(r.pairs, 3);
    ck_assert_uint_eq(r.padded, 0);
    /* window [9]: q(g1) = (0.5 + 0.25)/2, q(r1) = 0.5/2; window [4]:
     * q(g2) = 0.75.  S = 0.375 + 0.75, M = 0.625 + 0.75. */
    ck_assert_double_eq(r.gamma, 0.25);
    ck_assert_double_eq_tol(r.score, 1.125, 1e-15);
    ck_assert_double_eq_tol(r.mass, 1.375, 1e-15);
    ck_assert_double_eq_tol(r.expected, 0.34375, 1e-15);
    ck_assert_double_eq_tol(r.range_sq, 0.953125, 1e-15);
    ck_assert_double_eq_tol(r.variance, 0.1435546875, 1e-15);
    ck_assert_double_eq_tol(r.max_excess, 0.5625, 1e-15);
    /* t = 0.78125: Hoeffding -2 t^2 / 0.953125, Bernstein
     * -t^2 / (2 (0.1435546875 + 0.5625 t / 3)), in log10. */
    ck_assert_double_eq_tol(r.log10_p_hoeffding, -0.5562173180113369, 1e-9);
    ck_assert_double_eq_tol(r.log10_p_bernstein, -0.45695968213725985, 1e-9);
    double q[] = {0.375, 0.25, 0.75};
    double ref = grid_chernoff(q, 3, 0.25, 1.125) / LN10;
    ck_assert_double_eq_tol(r.log10_p_chernoff, ref, 1e-6);
    ck_assert_double_le(r.log10_p_chernoff, r.log10_p_hoeffding);
    ck_assert_double_eq(r.log10_p, r.log10_p_chernoff);
    ck_assert_int_eq(r.bound, HM_BOUND_CHERNOFF);
    /* an upper bound on the exact tail P[S >= 1.125] = 1/16 (0.375 and
     * 0.75 both green) */
    ck_assert_double_ge(r.log10_p, log10(1.0 / 16));
    ck_assert_str_eq(hm_greenmass_bound_name(r.bound), "chernoff");
    hm_greenmass_free(g);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

START_TEST(test_empty_and_names)
{
    hm_key *k = test_key(12);
    hm_ctx *ctx = test_ctx(k, "kgw");
    hm_greenmass *g = gm_new((const hm_ctx *const *)&ctx, 1, 0);
    hm_greenmass_stats r;
    ck_assert_uint_eq(hm_greenmass_keys(g), 1);
    ck_assert_uint_eq(hm_greenmass_channels(g), 1);
    ck_assert_int_eq(hm_greenmass_result(g, 0, 0, &r), HM_OK);
    ck_assert_double_eq(r.log10_p, 0);
    ck_assert_int_eq(r.bound, HM_BOUND_NONE);
    ck_assert_int_eq(hm_greenmass_result(g, 1, 0, &r), HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_result(g, 0, 1, &r), HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_result(NULL, 0, 0, &r), HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_result(g, 0, 0, NULL), HM_EINVAL);
    /* all mass red: no excess, p = 1 */
    int32_t c[] = {3};
    int32_t red = find_token(ctx, c, 1, 0, 0);
    double lp = 0;
    ck_assert_int_eq(hm_greenmass_add(g, c, 1, &red, &lp, 1), HM_OK);
    ck_assert_int_eq(hm_greenmass_result(g, 0, 0, &r), HM_OK);
    ck_assert_double_eq(r.score, 0);
    ck_assert_double_eq(r.log10_p, 0);
    ck_assert_int_eq(r.bound, HM_BOUND_NONE);
    hm_greenmass_clear(g);
    ck_assert_int_eq(hm_greenmass_result(g, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.records, 0);
    ck_assert_uint_eq(r.windows, 0);
    ck_assert_int_eq(hm_greenmass_add(g, c, 1, &red, &lp, 1), HM_OK);
    ck_assert_str_eq(hm_greenmass_bound_name(HM_BOUND_HOEFFDING), "hoeffding");
    ck_assert_str_eq(hm_greenmass_bound_name(HM_BOUND_BERNSTEIN), "bernstein");
    ck_assert_str_eq(hm_greenmass_bound_name(HM_BOUND_NONE), "none");
    ck_assert_ptr_null(hm_greenmass_bound_name(42));
    hm_greenmass_free(g);
    hm_greenmass_free(NULL);
    hm_greenmass_clear(NULL);
    ck_assert_uint_eq(hm_greenmass_keys(NULL), 0);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

/* ------------------------------------------------------- dedup, padding */

/* A random record: n distinct ids from base..base+29, mass 0.9. */
static void random_record(uint64_t *rng, int32_t base, int32_t *ids,
                          double *lps, size_t n)
{
    double w[64], sum = 0;
    for (size_t i = 0; i < n; i++) {
        int again;
        do {
            ids[i] = base + (int32_t)(test_rand(rng) % 30);
            again = 0;
            for (size_t j = 0; j < i; j++)
                again |= ids[j] == ids[i];
        } while (again);
        w[i] = -log(1 - test_uniform(rng)); /* Dirichlet(1, ..., 1) */
        sum += w[i];
    }
    for (size_t i = 0; i < n; i++)
        lps[i] = log(0.9 * w[i] / sum);
}

START_TEST(test_dedup)
{
    hm_key *k = test_key(13);
    hm_ctx *ctx = test_ctx(k, "kgw:h=2");
    hm_greenmass *a = gm_new((const hm_ctx *const *)&ctx, 1, 0);
    hm_greenmass *b = gm_new((const hm_ctx *const *)&ctx, 1, 0);
    int32_t ctxs[50][4], ids[50][8];
    double lps[50][8];
    uint64_t rng = 5;
    for (int i = 0; i < 50; i++) {
        for (int j = 0; j < 4; j++)
            ctxs[i][j] = (int32_t)(test_rand(&rng) % 6);
        random_record(&rng, 100 * ctxs[i][3], ids[i], lps[i], 8);
    }
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(hm_greenmass_add(a, ctxs[i], 4, ids[i], lps[i], 8),
                         HM_OK);
    /* b sees every record three times, the repeats interleaved */
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < 50; i++) {
            int j = pass == 1 ? (i * 7) % 50 : i;
            if (pass > 0 || i == j)
                ck_assert_int_eq(
                    hm_greenmass_add(b, ctxs[j], 4, ids[j], lps[j], 8), HM_OK);
        }
    hm_greenmass_stats ra, rb;
    ck_assert_int_eq(hm_greenmass_result(a, 0, 0, &ra), HM_OK);
    ck_assert_int_eq(hm_greenmass_result(b, 0, 0, &rb), HM_OK);
    /* 4096 possible contexts: some of the 50 repeat already */
    ck_assert_uint_eq(rb.records, 150);
    ck_assert_uint_eq(rb.dropped_repeat, 100 + ra.dropped_repeat);
    ck_assert_uint_gt(ra.windows, 10);
    rb.records = ra.records;
    rb.dropped_repeat = ra.dropped_repeat;
    ck_assert(memcmp(&ra, &rb, sizeof ra) == 0);
    /* a repeated context with a different listing is still a repeat */
    double other[8];
    for (int j = 0; j < 8; j++)
        other[j] = log(0.1);
    ck_assert_int_eq(hm_greenmass_add(b, ctxs[0], 4, ids[0], other, 8), HM_OK);
    ck_assert_int_eq(hm_greenmass_result(b, 0, 0, &rb), HM_OK);
    ck_assert_double_eq(rb.score, ra.score);
    hm_greenmass_free(a);
    hm_greenmass_free(b);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

START_TEST(test_padded)
{
    hm_key *k = test_key(14);
    hm_ctx *ctx = test_ctx(k, "kgw:id=a,h=1+kgw:id=b,h=3,gamma=0.5");
    hm_greenmass *g = gm_new((const hm_ctx *const *)&ctx, 1, 0);
    hm_greenmass *s =
        gm_new((const hm_ctx *const *)&ctx, 1, HM_GREENMASS_SKIP_PADDED);
    int32_t c[] = {1, 2, 3}, id = 7;
    double lp = log(0.5);
    for (size_t n = 0; n <= 3; n++) {
        ck_assert_int_eq(hm_greenmass_add(g, c, n, &id, &lp, 1), HM_OK);
        ck_assert_int_eq(hm_greenmass_add(s, c, n, &id, &lp, 1), HM_OK);
    }
    hm_greenmass_stats r;
    ck_assert_int_eq(hm_greenmass_result(g, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.padded, 1); /* the empty context */
    ck_assert_uint_eq(r.contexts, 4);
    ck_assert_uint_eq(r.windows, 4); /* [pad], [1], [2], [3] */
    ck_assert_int_eq(hm_greenmass_result(g, 0, 1, &r), HM_OK);
    ck_assert_uint_eq(r.padded, 3);
    ck_assert_uint_eq(r.windows, 4);
    ck_assert_double_eq(r.gamma, 0.5);
    ck_assert_int_eq(hm_greenmass_result(s, 0, 1, &r), HM_OK);
    ck_assert_uint_eq(r.dropped_padded, 3);
    ck_assert_uint_eq(r.padded, 0);
    ck_assert_uint_eq(r.contexts, 1);
    ck_assert_uint_eq(r.windows, 1);
    ck_assert_int_eq(hm_greenmass_result(s, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.dropped_padded, 1);
    ck_assert_uint_eq(r.contexts, 3);
    hm_greenmass_free(g);
    hm_greenmass_free(s);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

/* ----------------------------------------------------- refusals, input */

START_TEST(test_refusals)
{
    hm_key *k = test_key(15);
    static const char *const bad[] = {
        "gumbel", "tournament", "kgw:seeding=selfhash,h=4",
        "kgw:h=1+gumbel:h=4"};
    static const char *const why[] = {"kgw channels only",
                                      "kgw channels only", "selfhash",
                                      "channel 1 (gumbel"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        hm_ctx *ctx = test_ctx(k, bad[i]);
        hm_greenmass *g = (hm_greenmass *)1;
        char msg[HM_ERRMSG_SIZE] = "";
        ck_assert_int_eq(hm_greenmass_new(&g, (const hm_ctx *const *)&ctx, 1,
                                          0, msg, sizeof msg),
                         HM_ENOTSUP);
        ck_assert_ptr_null(g);
        ck_assert_msg(strstr(msg, why[i]) != NULL, "%s: %s", bad[i], msg);
        hm_ctx_free(ctx);
    }
    hm_ctx *c2[2] = {test_ctx(k, "kgw:h=1"), test_ctx(k, "kgw:h=2")};
    hm_greenmass *g = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    ck_assert_int_eq(hm_greenmass_new(&g, (const hm_ctx *const *)c2, 2, 0, msg,
                                      sizeof msg),
                     HM_EINVAL);
    ck_assert_ptr_nonnull(strstr(msg, "one spec"));
    ck_assert_int_eq(hm_greenmass_new(&g, (const hm_ctx *const *)c2, 0, 0,
                                      NULL, 0),
                     HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_new(&g, (const hm_ctx *const *)c2, 1, 8,
                                      NULL, 0),
                     HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_new(NULL, (const hm_ctx *const *)c2, 1, 0,
                                      NULL, 0),
                     HM_EINVAL);
    hm_ctx_free(c2[0]);
    hm_ctx_free(c2[1]);
    hm_key_free(k);
}
END_TEST

START_TEST(test_bad_records)
{
    hm_key *k = test_key(16);
    hm_ctx *ctx = test_ctx(k, "kgw");
    hm_greenmass *g = gm_new((const hm_ctx *const *)&ctx, 1, 0);
    int32_t c[] = {1, 2}, ids[] = {3, 4, 5}, neg[] = {3, -4, 5},
            dup[] = {3, 4, 3}, cneg[] = {1, -2};
    double ok[] = {log(0.2), log(0.3), log(0.1)};
    double pos[] = {log(0.2), 0.01, log(0.1)};
    double nan_[] = {log(0.2), NAN, log(0.1)};
    double big[] = {log(0.5), log(0.4), log(0.2)};
    ck_assert_int_eq(hm_greenmass_add(g, c, 2, ids, pos, 3), HM_ERANGE);
    ck_assert_int_eq(hm_greenmass_add(g, c, 2, ids, nan_, 3), HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_add(g, c, 2, ids, big, 3), HM_ERANGE);
    ck_assert_int_eq(hm_greenmass_add(g, c, 2, neg, ok, 3), HM_ERANGE);
    ck_assert_int_eq(hm_greenmass_add(g, c, 2, dup, ok, 3), HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_add(g, cneg, 2, ids, ok, 3), HM_ERANGE);
    ck_assert_int_eq(hm_greenmass_add(g, NULL, 2, ids, ok, 3), HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_add(g, c, 2, NULL, ok, 3), HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_add(g, c, 2, ids, NULL, 3), HM_EINVAL);
    ck_assert_int_eq(hm_greenmass_add(NULL, c, 2, ids, ok, 3), HM_EINVAL);
    /* a duplicate among many ids (the sorting path) */
    int32_t many[200];
    double small[200];
    for (int i = 0; i < 200; i++) {
        many[i] = 1000 - 3 * i;
        small[i] = log(0.004);
    }
    many[150] = many[17];
    ck_assert_int_eq(hm_greenmass_add(g, c, 2, many, small, 200), HM_EINVAL);
    /* all or nothing: nothing was added */
    hm_greenmass_stats r;
    ck_assert_int_eq(hm_greenmass_result(g, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.records, 0);
    ck_assert_uint_eq(r.windows, 0);
    /* allowed: the tolerance, zero probabilities, an empty listing */
    double edge[] = {log(0.5), log(0.5), log(HM_GREENMASS_MASS_TOLERANCE / 2)};
    double zero[] = {-INFINITY, log(0.5), -INFINITY};
    many[150] = 1;
    ck_assert_int_eq(hm_greenmass_add(g, c, 2, ids, edge, 3), HM_OK);
    ck_assert_int_eq(hm_greenmass_add(g, c, 1, ids, zero, 3), HM_OK);
    ck_assert_int_eq(hm_greenmass_add(g, NULL, 0, NULL, NULL, 0), HM_OK);
    ck_assert_int_eq(hm_greenmass_add(g, ids, 3, many, small, 200), HM_OK);
    ck_assert_int_eq(hm_greenmass_result(g, 0, 0, &r), HM_OK);
    ck_assert_uint_eq(r.records, 4);
    ck_assert_uint_eq(r.listed, 206);
    hm_greenmass_free(g);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

/* --------------------------------------------------------- calibration */

#define CAL_KEYS 600
#define CAL_CONTEXTS 1500
#define CAL_WINDOWS 30

/* The naive test that treats every context as an independent term (no
 * aggregation by window), with the normal approximation of sampled-token
 * audits. */
static double naive_log10p(const hm_ctx *ctx, int32_t (*c)[3],
                           int32_t (*ids)[8], double (*lps)[8], size_t n)
{
    double s = 0, e = 0, var = 0, g = 0.25;
    int rc = HM_OK;
    for (size_t i = 0; i < n; i++) {
        for (int j = 0; j < 8; j++) {
            double p = exp(lps[i][j]), sc = 0;
            /* one check per call: Check reports every passed assertion */
            rc |= hm_token_score(ctx, 0, c[i], 3, ids[i][j], &sc);
            s += p * sc;
            e += g * p;
            var += g * (1 - g) * p * p;
        }
    }
    ck_assert_int_eq(rc, HM_OK);
    return log10(0.5 * erfc((s - e) / sqrt(2 * var)));
}

START_TEST(test_calibration)
{
    /* A clean suspect: distributions that depend on the window (the last
     * token, h=1) but not on any key, 1500 contexts over 30 windows. */
    static int32_t c[CAL_CONTEXTS][3], ids[CAL_CONTEXTS][8];
    static double lps[CAL_CONTEXTS][8];
    uint64_t rng = 99;
    for (size_t i = 0; i < CAL_CONTEXTS; i++) {
        c[i][0] = (int32_t)(test_rand(&rng) % 50000);
        c[i][1] = (int32_t)(test_rand(&rng) % 50000);
        c[i][2] = (int32_t)(test_rand(&rng) % CAL_WINDOWS);
        random_record(&rng, 1000 + 30 * c[i][2], ids[i], lps[i], 8);
    }
    hm_ctx **ctxs = calloc(CAL_KEYS, sizeof *ctxs);
    ck_assert_ptr_nonnull(ctxs);
    for (size_t i = 0; i < CAL_KEYS; i++) {
        hm_key *k = NULL;
        ck_assert_int_eq(hm_key_from_label(&k, "test_greenmass calibration",
                                           (uint32_t)i),
                         HM_OK);
        ctxs[i] = test_ctx(k, "kgw:gamma=0.25,h=1");
        hm_key_free(k);
    }
    hm_greenmass *g = gm_new((const hm_ctx *const *)ctxs, CAL_KEYS, 0);
    int rc = HM_OK;
    for (size_t i = 0; i < CAL_CONTEXTS; i++)
        rc |= hm_greenmass_add(g, c[i], 3, ids[i], lps[i], 8);
    ck_assert_int_eq(rc, HM_OK);
    static const double alphas[] = {0.01, 0.05, 0.1, 0.25, 0.5};
    enum { NA = sizeof alphas / sizeof *alphas };
    size_t hits[NA] = {0}, naive_hits = 0;
    double *p = malloc(CAL_KEYS * sizeof *p);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < CAL_KEYS; i++) {
        hm_greenmass_stats r;
        ck_assert_int_eq(hm_greenmass_result(g, i, 0, &r), HM_OK);
        ck_assert_uint_eq(r.windows, CAL_WINDOWS);
        ck_assert_double_le(r.log10_p, 0);
        ck_assert_double_le(r.log10_p, r.log10_p_hoeffding);
        ck_assert_double_le(r.log10_p, r.log10_p_bernstein);
        p[i] = pow(10, r.log10_p);
        for (size_t a = 0; a < NA; a++)
            hits[a] += p[i] <= alphas[a];
        if (i < 200)
            naive_hits += naive_log10p(ctxs[i], c, ids, lps, CAL_CONTEXTS) <=
                          log10(0.05);
    }
    /* P[p <= a] <= a, with a binomial margin of 3 standard deviations */
    for (size_t a = 0; a < NA; a++) {
        double n = CAL_KEYS, lim = alphas[a] * n +
                                   3 * sqrt(n * alphas[a] * (1 - alphas[a])) + 1;
        ck_assert_msg(hits[a] <= lim, "alpha %g: %zu of %d keys rejected",
                      alphas[a], hits[a], CAL_KEYS);
    }
    /* ... and the one-sided KS test finds nothing too small */
    double d, ks;
    ck_assert_int_eq(hm_ks_uniform(p, CAL_KEYS, &d, &ks), HM_OK);
    ck_assert_msg(ks > -3, "KS D+ %g, log10 p %g", d, ks);
    /* The check can fail: ignoring that contexts share windows (hence
     * green lists) rejects far more often than alpha = 0.05. */
    ck_assert_msg(naive_hits > 30, "naive test: %zu of 200", naive_hits);
    free(p);
    hm_greenmass_free(g);
    for (size_t i = 0; i < CAL_KEYS; i++)
        hm_ctx_free(ctxs[i]);
    free(ctxs);
}
END_TEST

/* --------------------------------------------------------------- power */

#define VOCAB 2000
#define TOPK 20

/* The suspect's top-k log-probabilities after context: softmax of the
 * synthetic model's logits, biased first through teacher (a kgw context,
 * as served; NULL: clean). */
static void suspect_topk(const hm_ctx *teacher, const int32_t *context,
                         size_t n, int32_t *ids, double *lps)
{
    float logits[VOCAB];
    test_model_logits(context, n, logits, VOCAB);
    if (teacher != NULL) {
        hm_row row = {context, n, NULL, 1.0f, 0};
        ck_assert_int_eq(
            hm_bias_dense(teacher, logits, 1, VOCAB, VOCAB, &row, NULL), HM_OK);
    }
    double mx = -INFINITY, z = 0;
    for (int v = 0; v < VOCAB; v++)
        mx = fmax(mx, logits[v]);
    for (int v = 0; v < VOCAB; v++)
        z += exp(logits[v] - mx);
    for (int j = 0; j < TOPK; j++) { /* selection of the k best */
        int best = -1;
        for (int v = 0; v < VOCAB; v++) {
            int taken = 0;
            for (int i = 0; i < j; i++)
                taken |= ids[i] == v;
            if (!taken && (best < 0 || logits[v] > logits[best]))
                best = v;
        }
        ids[j] = best;
        lps[j] = logits[best] - mx - log(z);
    }
}

START_TEST(test_power)
{
    hm_key *k = test_key(21), *other = test_key(22);
    /* The teacher served with delta = 1; the audit names delta = 2, which
     * does not change the green lists (nor the subkeys). */
    hm_ctx *teacher = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    ck_assert_int_eq(hm_ctx_new(&teacher, k, "kgw:gamma=0.25,delta=1,h=1",
                                "acme", msg, sizeof msg),
                     HM_OK);
    hm_ctx *ctxs[3] = {NULL, NULL, NULL};
    ck_assert_int_eq(hm_ctx_new(&ctxs[0], k, "kgw:gamma=0.25,h=1", "acme",
                                msg, sizeof msg),
                     HM_OK);
    ck_assert_int_eq(hm_ctx_new(&ctxs[1], k, "kgw:gamma=0.25,h=1", "other",
                                msg, sizeof msg),
                     HM_OK);
    ck_assert_int_eq(hm_ctx_new(&ctxs[2], other, "kgw:gamma=0.25,h=1", "acme",
                                msg, sizeof msg),
                     HM_OK);
    hm_greenmass *marked = gm_new((const hm_ctx *const *)ctxs, 3, 0);
    hm_greenmass *clean = gm_new((const hm_ctx *const *)ctxs, 3, 0);
    uint64_t rng = 7;
    for (int i = 0; i < 200; i++) {
        int32_t c[3], ids[TOPK];
        double lps[TOPK];
        for (int j = 0; j < 3; j++)
            c[j] = (int32_t)(test_rand(&rng) % VOCAB);
        suspect_topk(teacher, c, 3, ids, lps);
        ck_assert_int_eq(hm_greenmass_add(marked, c, 3, ids, lps, TOPK),
                         HM_OK);
        suspect_topk(NULL, c, 3, ids, lps);
        ck_assert_int_eq(hm_greenmass_add(clean, c, 3, ids, lps, TOPK),
                         HM_OK);
    }
    hm_greenmass_stats r;
    ck_assert_int_eq(hm_greenmass_result(marked, 0, 0, &r), HM_OK);
    ck_assert_msg(r.log10_p < -20, "marked: log10 p %g (S %g, E %g)",
                  r.log10_p, r.score, r.expected);
    ck_assert_double_gt(r.score, 1.5 * r.expected);
    for (size_t key = 1; key < 3; key++) { /* other tenant, other key */
        ck_assert_int_eq(hm_greenmass_result(marked, key, 0, &r), HM_OK);
        ck_assert_msg(r.log10_p > -3, "key %zu: log10 p %g", key, r.log10_p);
    }
    for (size_t key = 0; key < 3; key++) {
        ck_assert_int_eq(hm_greenmass_result(clean, key, 0, &r), HM_OK);
        ck_assert_msg(r.log10_p > -3, "clean key %zu: log10 p %g", key,
                      r.log10_p);
    }
    hm_greenmass_free(marked);
    hm_greenmass_free(clean);
    for (int i = 0; i < 3; i++)
        hm_ctx_free(ctxs[i]);
    hm_ctx_free(teacher);
    hm_key_free(k);
    hm_key_free(other);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("greenmass");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_reference);
    tcase_add_test(tc, test_empty_and_names);
    tcase_add_test(tc, test_dedup);
    tcase_add_test(tc, test_padded);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_bad_records);
    tcase_add_test(tc, test_calibration);
    tcase_add_test(tc, test_power);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(suite());
}
